#!/usr/bin/env bash
# The CPU bench tables of the fused torch-backend path (README.md in this folder lists them).
# Usage: results/cpu/bench/fused-cpu/run.sh quiet|loaded|before|one-thread [VIT|CAUSAL|ALL]
#   quiet:  waits for a 1-min load below 1.5 before each table, then runs it on the quiet machine
#   loaded: the same tables (causal only to L=4096) with `python -c "while True: pass"` pinned to core 1 for the whole run (and nothing
#           else: it waits for a load below 1.5 before starting the loop, and below 2.5 before each table)
#   one-thread: the loaded tables' shapes on the quiet machine with one thread (OMP_NUM_THREADS=1): how much
#           each attention gains from the second core, which bounds what taking it away can cost
#   before: the same ViT shapes and the short causal lengths on the op-by-op path (EA_SUITE_CPU_FUSED=0)
# Run from the repository root with the package importable (PYTHONPATH=. or an install).
set -euo pipefail
MODE=${1:?quiet, loaded, before or one-thread}
WHAT=${2:-ALL}
PY=${PYTHON:-python}
OUT=results/cpu/bench/fused-cpu
SUFFIX=$MODE

wait_load_below() {
  while awk -v t="$1" '{exit !($1 >= t)}' /proc/loadavg; do echo "load $(cut -d' ' -f1 /proc/loadavg), waiting"; sleep 30; done
}

bench() {  # name, extra args...
  local name=$1; shift
  case $MODE in quiet|before|one-thread) wait_load_below 1.5 ;; loaded) wait_load_below 2.5 ;; esac
  $PY run_suite.py bench --attn "ea;softmax" --mode fwdbwd --head-dim 64 --out "$OUT/$name-$SUFFIX" "$@"
}

BUSY=""
if [ "$MODE" = loaded ]; then
  wait_load_below 1.5
  taskset -c 1 $PY -c "while True: pass" &
  BUSY=$!
  trap 'kill $BUSY' EXIT
  sleep 5
fi
[ "$MODE" = before ] && export EA_SUITE_CPU_FUSED=0
[ "$MODE" = one-thread ] && export OMP_NUM_THREADS=1

if [ "$WHAT" = VIT ] || [ "$WHAT" = ALL ]; then
  bench vit-b32-l197 --no-causal --batch 32 --lengths 197 --heads 3 --repeats 5
  bench vit-b64-l50 --no-causal --batch 64 --lengths 50 --heads 3 --repeats 5
fi
if [ "$WHAT" = CAUSAL ] || [ "$WHAT" = ALL ]; then
  if [ "$MODE" = before ]; then
    bench causal-b1-h8 --causal --batch 1 --lengths 1024,2048 --heads 8 --repeats 3
  elif [ "$MODE" = loaded ] || [ "$MODE" = one-thread ]; then
    bench causal-b1-h8 --causal --batch 1 --lengths 1024,2048,4096 --heads 8 --repeats 3
  else
    bench causal-b1-h8 --causal --batch 1 --lengths 1024,2048,4096,8192,16384,32768 --heads 8 --repeats 3
  fi
fi
