"""PyTorch's gradients at the points of the conventions table (the guide's "Kinks" and
"Conventions"), which tests/conventions.rs pins: run with PyTorch 2.15 installed,
    python3 tools/reference/pytorch_conventions.py
Each line is `name: inputs -> value, gradients` in float64.
"""

import math

import torch

print("torch", torch.__version__)


def grads(f, *xs):
    ts = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs]
    y = f(*ts)
    y.backward()
    return y.item(), [t.grad.item() for t in ts]


def show(name, f, *xs):
    y, g = grads(f, *xs)
    print(f"{name}: {list(xs)} -> {y!r}, {g!r}")


nan, inf = math.nan, math.inf
for x in [0.0, -0.0, 1.5, -1.5, nan]:
    show("abs", torch.abs, x)
    show("relu", torch.relu, x)
for a, b in [(1.0, 1.0), (1.0, 2.0), (nan, 1.0), (1.0, nan)]:
    show("maximum", torch.maximum, a, b)
    show("minimum", torch.minimum, a, b)
xs = [1.0, 3.0, 3.0]
t = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
torch.amax(t).backward()
print(f"amax: {xs} -> {t.grad.tolist()!r}")
for x in [-1.0, 1.0, 0.5, -2.0, 2.0, nan]:
    show("clamp(x, -1, 1)", lambda x: torch.clamp(x, -1.0, 1.0), x)
show("clamp(x, 1, 1)", lambda x: torch.clamp(x, 1.0, 1.0), 1.0)
show("clamp(x, 0, inf)", lambda x: torch.clamp(x, min=0.0), 0.0)
for a, b in [(0.0, 0.0), (-0.0, 0.0), (0.0, -0.0), (-0.0, -0.0), (1e-300, 1e-300), (0.0, 1.0)]:
    show("atan2", torch.atan2, a, b)
for x in [19.0, 20.0, 20.5, 25.0, 40.0, -20.0]:
    show("softplus", torch.nn.functional.softplus, x)
for x in [0.0, -0.0, 8.0]:
    show("pow(x, 1/3)", lambda x: torch.pow(x, 1.0 / 3.0), x)
print("cbrt in torch:", hasattr(torch, "cbrt"))
