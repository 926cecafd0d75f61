#!/usr/bin/env bash
# The committed LRA cpu run of issue 16: six tasks; ea, ea:order=2 and softmax with 3 seeds, linear and
# retention with 1, and every task's learnability probes, one job at a time (the timings stay comparable).
# Run from the repository root, in as many sittings as it takes: --resume runs only what is not yet ok.
set -euo pipefail
T=lra-listops,lra-text,lra-retrieval,lra-image,lra-pathfinder,lra-pathx
OUT=results/cpu/lra-3seeds
python run_suite.py suite --tasks "$T" --profile cpu --attn "ea;ea:order=2;softmax" --seeds 3 --out "$OUT" --resume
python run_suite.py suite --tasks "$T" --profile cpu --attn "linear;retention" --out "$OUT" --resume
for task in ${T//,/ }; do
  python run_suite.py probe "$task" --profile cpu --out "$OUT" --resume
done
python run_suite.py regenerate   # every compare table of results/generated.yaml
python run_suite.py report "$OUT"
