"""microgpt in plain CPython: the tapegrad team's own reading of ../shared/MICROGPT.md.

This is NOT Karpathy's microgpt.py: it is written from the facts stated in MICROGPT.md
(data order, initialisation, model, Adam schedule, sampling) with a micrograd-style scalar
`Value` whose partials are computed in the forward pass, so that every floating-point
operation is the one the reference performs, in the same order:

- `a / b` is `a * b**-1`, `x ** p` is C `pow` (Python float `**`), `-x` is `x * -1`,
  `a - b` is `a + (-b)`; Python's `sum` starts from the int 0;
- backward is the reverse of a topological order found by a depth-first search over
  each node's children in order, with `child.grad += local_grad * v.grad`;
- Adam uses Python float `**` (`g ** 2`, `v_hat ** 0.5`, `beta ** (step + 1)`).

It is a development tool: it produces the loss trace that tests/data/microgpt_trace.json
holds (every step's loss, `repr` precision) and the lines MICROGPT.md says the reference
prints. Run in `models/` (a few minutes):

    nice python3 tools/microgpt_reference.py data/names.txt --trace tests/data/microgpt_trace.json
"""

import argparse
import json
import math
import random


class Value:
    """A scalar with its gradient, its children and the local partials w.r.t. them."""

    __slots__ = ("data", "grad", "_children", "_local_grads")

    def __init__(self, data, children=(), local_grads=()):
        self.data = data
        self.grad = 0
        self._children = children
        self._local_grads = local_grads

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data + other.data, (self, other), (1, 1))

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data * other.data, (self, other), (other.data, self.data))

    def __pow__(self, other):
        # `other` is a plain number.
        return Value(self.data**other, (self,), (other * self.data ** (other - 1),))

    def log(self):
        return Value(math.log(self.data), (self,), (1 / self.data,))

    def exp(self):
        return Value(math.exp(self.data), (self,), (math.exp(self.data),))

    def relu(self):
        return Value(max(0, self.data), (self,), (float(self.data > 0),))

    def __neg__(self):
        return self * -1

    def __radd__(self, other):
        return self + other

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return other + (-self)

    def __rmul__(self, other):
        return self * other

    def __truediv__(self, other):
        return self * other**-1

    def __rtruediv__(self, other):
        return other * self**-1

    def backward(self):
        topo = []
        visited = set()
        # An explicit stack instead of recursion (the graph is a few thousand deep); it
        # yields the same post-order as the recursive search over children in order.
        stack = [(self, 0)]
        visited.add(self)
        while stack:
            v, i = stack.pop()
            if i < len(v._children):
                stack.append((v, i + 1))
                child = v._children[i]
                if child not in visited:
                    visited.add(child)
                    stack.append((child, 0))
            else:
                topo.append(v)
        self.grad = 1
        for v in reversed(topo):
            for child, local_grad in zip(v._children, v._local_grads):
                child.grad += local_grad * v.grad


N_EMBD, N_HEAD, N_LAYER, BLOCK_SIZE = 16, 4, 1, 16
HEAD_DIM = N_EMBD // N_HEAD


def linear(x, w):
    return [sum(wi * xi for wi, xi in zip(wo, x)) for wo in w]


def softmax(logits):
    max_val = max(val.data for val in logits)
    exps = [(val - max_val).exp() for val in logits]
    total = sum(exps)
    return [e / total for e in exps]


def rmsnorm(x):
    ms = sum(xi * xi for xi in x) / len(x)
    scale = (ms + 1e-5) ** -0.5
    return [xi * scale for xi in x]


def gpt(sd, token_id, pos_id, keys, values):
    x = [t + p for t, p in zip(sd["wte"][token_id], sd["wpe"][pos_id])]
    x = rmsnorm(x)
    for li in range(N_LAYER):
        x_residual = x
        x = rmsnorm(x)
        q = linear(x, sd[f"layer{li}.attn_wq"])
        k = linear(x, sd[f"layer{li}.attn_wk"])
        v = linear(x, sd[f"layer{li}.attn_wv"])
        keys[li].append(k)
        values[li].append(v)
        x_attn = []
        for h in range(N_HEAD):
            hs = h * HEAD_DIM
            q_h = q[hs : hs + HEAD_DIM]
            k_h = [ki[hs : hs + HEAD_DIM] for ki in keys[li]]
            v_h = [vi[hs : hs + HEAD_DIM] for vi in values[li]]
            attn_logits = [
                sum(q_h[j] * k_h[t][j] for j in range(HEAD_DIM)) / HEAD_DIM**0.5
                for t in range(len(k_h))
            ]
            attn_weights = softmax(attn_logits)
            head_out = [
                sum(attn_weights[t] * v_h[t][j] for t in range(len(v_h)))
                for j in range(HEAD_DIM)
            ]
            x_attn.extend(head_out)
        x = linear(x_attn, sd[f"layer{li}.attn_wo"])
        x = [a + b for a, b in zip(x, x_residual)]
        x_residual = x
        x = rmsnorm(x)
        x = linear(x, sd[f"layer{li}.mlp_fc1"])
        x = [xi.relu() for xi in x]
        x = linear(x, sd[f"layer{li}.mlp_fc2"])
        x = [a + b for a, b in zip(x, x_residual)]
    return linear(x, sd["lm_head"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", help="one document per line (names.txt)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--trace", help="write every step's loss as a JSON array")
    ap.add_argument("--grads", help="write step 1's gradient (params order) as JSON")
    args = ap.parse_args()

    random.seed(args.seed)
    with open(args.data) as f:
        docs = [line.strip() for line in f.read().strip().split("\n") if line.strip()]
    random.shuffle(docs)
    print(f"num docs: {len(docs)}")
    uchars = sorted(set("".join(docs)))
    bos = len(uchars)
    vocab_size = len(uchars) + 1
    print(f"vocab size: {vocab_size}")

    def matrix(nout, nin, std=0.08):
        return [[Value(random.gauss(0, std)) for _ in range(nin)] for _ in range(nout)]

    sd = {
        "wte": matrix(vocab_size, N_EMBD),
        "wpe": matrix(BLOCK_SIZE, N_EMBD),
        "lm_head": matrix(vocab_size, N_EMBD),
    }
    for i in range(N_LAYER):
        sd[f"layer{i}.attn_wq"] = matrix(N_EMBD, N_EMBD)
        sd[f"layer{i}.attn_wk"] = matrix(N_EMBD, N_EMBD)
        sd[f"layer{i}.attn_wv"] = matrix(N_EMBD, N_EMBD)
        sd[f"layer{i}.attn_wo"] = matrix(N_EMBD, N_EMBD)
        sd[f"layer{i}.mlp_fc1"] = matrix(4 * N_EMBD, N_EMBD)
        sd[f"layer{i}.mlp_fc2"] = matrix(N_EMBD, 4 * N_EMBD)
    params = [p for mat in sd.values() for row in mat for p in row]
    print(f"num params: {len(params)}")

    learning_rate, beta1, beta2, eps_adam = 0.01, 0.85, 0.99, 1e-8
    m = [0.0] * len(params)
    v = [0.0] * len(params)
    num_steps = args.steps
    trace = []
    for step in range(num_steps):
        doc = docs[step % len(docs)]
        tokens = [bos] + [uchars.index(ch) for ch in doc] + [bos]
        n = min(BLOCK_SIZE, len(tokens) - 1)
        keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
        losses = []
        for pos_id in range(n):
            token_id, target_id = tokens[pos_id], tokens[pos_id + 1]
            logits = gpt(sd, token_id, pos_id, keys, values)
            probs = softmax(logits)
            losses.append(-probs[target_id].log())
        loss = (1 / n) * sum(losses)
        loss.backward()
        if step == 0 and args.grads:
            with open(args.grads, "w") as f:
                json.dump([float(p.grad) for p in params], f)
        lr_t = learning_rate * (1 - step / num_steps)
        for i, p in enumerate(params):
            m[i] = beta1 * m[i] + (1 - beta1) * p.grad
            v[i] = beta2 * v[i] + (1 - beta2) * p.grad**2
            m_hat = m[i] / (1 - beta1 ** (step + 1))
            v_hat = v[i] / (1 - beta2 ** (step + 1))
            p.data -= lr_t * m_hat / (v_hat**0.5 + eps_adam)
            p.grad = 0
        trace.append(loss.data)
        if step < 3 or (step + 1) % 100 == 0:
            print(f"step {step + 1:4d} / {num_steps:4d} | loss {loss.data:.4f}", flush=True)
    if args.trace:
        with open(args.trace, "w") as f:
            f.write("[" + ",\n".join(repr(x) for x in trace) + "]\n")

    temperature = 0.5
    print("\n--- inference (new, hallucinated names) ---")
    for sample_idx in range(20):
        keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
        token_id = bos
        sample = []
        for pos_id in range(BLOCK_SIZE):
            logits = gpt(sd, token_id, pos_id, keys, values)
            probs = softmax([lg / temperature for lg in logits])
            token_id = random.choices(range(vocab_size), weights=[p.data for p in probs])[0]
            if token_id == bos:
                break
            sample.append(uchars[token_id])
        print(f"sample {sample_idx + 1:2d}: {''.join(sample)}")


if __name__ == "__main__":
    main()
