#!/usr/bin/env bash
# run.sh GRADBENCH-WORKDIR [EVAL...]: runs GradBench's evals for tapegrad, `manual` and
# `adol-c` in one sitting and prints, per eval, the geometric mean over its workloads of
# each tool's derivative time divided by `manual`'s primal time on the same workload
# (GradBench's scoring: the nightly's figures are these ratios).
#
# GRADBENCH-WORKDIR is a GradBench checkout built for offline runs: its `gradbench` CLI
# (target/release/gradbench), the Python evals' venv (.venv) and the C++ tools' sources
# (tools/manual, tools/adol-c, built by cpp.py on `define`). EVALs default to all twelve.
#
# Environment: MIN_SECONDS (default 1, GradBench's default) for every eval; TOOLS (default
# "tapegrad manual adol-c"; also "tapegrad-record", the tool with --record-every-run, and
# "tapegrad-jit", the tool with --jit (replays compiled to native code): a column each);
# ARGS_<eval> replaces an eval's size flags (defaults below: GradBench's default sizes,
# with ht to hand 11, as the snapshot has no hand 12). TAPEGRAD_GRADBENCH names a
# tapegrad-gradbench binary to run instead of building this checkout's (to compare two
# builds). Logs go to LOGS (default GRADBENCH-WORKDIR/runs/table)/EVAL-TOOL.jsonl;
# `--table-only` reprints the table from them without running anything.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(cd "${1:?usage: run.sh GRADBENCH-WORKDIR [--table-only] [EVAL...]}" && pwd)
shift
run=1
if [ "${1:-}" = "--table-only" ]; then run=0; shift; fi
evals=${*:-hello llsq lse det ode gmm ba ht lstm kmeans particle saddle}
tools=${TOOLS:-tapegrad manual adol-c}
min_seconds=${MIN_SECONDS:-1}
logs=${LOGS:-$work/runs/table}
mkdir -p "$logs"

default_args() {
  case "$1" in
    ht) echo "--max 11" ;;
    *) echo "" ;;
  esac
}

if [ "$run" = 1 ]; then
  [ -x "$work/target/release/gradbench" ] || { echo "no $work/target/release/gradbench: build GradBench's CLI there first" >&2; exit 2; }
  if [ -n "${TAPEGRAD_GRADBENCH:-}" ]; then
    tapegrad=$(realpath "$TAPEGRAD_GRADBENCH")
  else
    (cd "$here/.." && cargo build --release -q -p tapegrad-gradbench)
    tapegrad="$here/../target/release/tapegrad-gradbench"
  fi
  for e in $evals; do
    var="ARGS_$e"
    args=${!var-$(default_args "$e")}
    for t in $tools; do
      case "$t" in
        tapegrad) cmd=$tapegrad ;;
        tapegrad-record) cmd="$tapegrad --record-every-run" ;;
        tapegrad-jit) cmd="$tapegrad --jit" ;;
        manual|adol-c)
          # The C++ tools implement the ADBench-style evals only (their evals.txt).
          if ! grep -qx "$e" "$work/tools/$t/evals.txt"; then continue; fi
          cmd="python3 python/gradbench/gradbench/cpp.py $t" ;;
        *) echo "unknown tool $t" >&2; exit 2 ;;
      esac
      echo "$(date +%H:%M:%S) $e $t $args (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
      (cd "$work" && PYTHONPATH=python/gradbench target/release/gradbench run -o "$logs/$e-$t.jsonl" \
        --eval ".venv/bin/python python/gradbench/gradbench/evals/$e/run.py $args --min-seconds $min_seconds" \
        --tool "$cmd" >/dev/null 2>&1) || true
    done
  done
fi

python3 - "$logs" $evals <<'PY'
import json, math, os, sys

logs, evals = sys.argv[1], sys.argv[2:]
# GradBench's scorer (crates/gradbench/src/stats.rs): primal and derivative functions.
functions = {"ba": ("objective", "jacobian"), "gmm": ("objective", "jacobian"),
             "ht": ("objective", "jacobian"), "lstm": ("objective", "jacobian"),
             "kmeans": ("cost", "dir"), "ode": ("primal", "gradient"),
             "llsq": ("primal", "gradient"), "det": ("primal", "gradient"),
             "lse": ("primal", "gradient")}

def read(path):
    """Per (function, workload): mean evaluate seconds, valid, runs."""
    out, msgs, valid = {}, {}, {}
    if not os.path.exists(path):
        return None
    for line in open(path):
        e = json.loads(line)
        if "message" in e:
            m = e["message"]
            if m.get("kind") == "evaluate":
                msgs[m["id"]] = m
            elif m.get("kind") == "analysis":
                valid[m["of"]] = m.get("valid")
        elif "response" in e:
            r = e["response"]
            m = msgs.get(r["id"])
            if m is None:
                continue
            ts = [t["nanoseconds"] / 1e9 for t in r.get("timings", []) if t["name"] == "evaluate"]
            key = (m["function"], m.get("description", ""))
            out[key] = {"mean": sum(ts) / len(ts) if ts else None, "runs": len(ts),
                        "ok": bool(r.get("success")), "id": r["id"]}
    for v in out.values():
        v["valid"] = valid.get(v["id"])
    return out

def geomean(xs):
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")

columns = ["tapegrad"] + [t for t in ["tapegrad-record", "tapegrad-jit"] if any(
    os.path.exists(f"{logs}/{e}-{t}.jsonl") for e in evals)] + ["adol-c"]
print(f"{'eval':8} {'workloads':>9} " + " ".join(f"{c:>15}" for c in columns)
      + "   valid per tool (derivative time / manual primal time, geomean)")
for e in evals:
    logs_of = {t: read(f"{logs}/{e}-{t}.jsonl") for t in ["manual"] + columns}
    tg = logs_of["tapegrad"]
    if tg is None:
        continue
    def validity_of(log):
        ok = sum(1 for v in log.values() if v["ok"] and v["valid"] is not False)
        return f"{ok}/{len(log)}"
    validity = " ".join(f"{t}: {validity_of(logs_of[t])}" for t in columns
                        if t.startswith("tapegrad") and logs_of[t] is not None) + " valid"
    if e not in functions:
        # hello, particle, saddle: no manual timing to divide by; GradBench scores the
        # fastest function (particle, saddle).
        best = min((v["mean"] for v in tg.values() if v["mean"]), default=float("nan"))
        print(f"{e:8} {len(tg):>9} " + " ".join(f"{'-':>15}" for c in columns)
              + f"   {validity}   fastest function {best:.3e} s")
        continue
    primal, deriv = functions[e]
    manual = logs_of["manual"] or {}
    cols = []
    for t in columns:
        log = logs_of[t] or {}
        ratios = []
        for (fn, desc), v in log.items():
            p = manual.get((primal, desc))
            if fn == deriv and v["mean"] and p and p["mean"]:
                ratios.append(v["mean"] / p["mean"])
        cols.append((geomean(ratios), len(ratios)))
    n = cols[0][1]
    fmt = lambda c: f"{c[0]:15.2f}" if c[1] else f"{'-':>15}"
    print(f"{e:8} {n:>9} " + " ".join(fmt(c) for c in cols) + f"   {validity}")
PY
