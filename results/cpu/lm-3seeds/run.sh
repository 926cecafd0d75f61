#!/usr/bin/env bash
# The committed LM cpu run of issue 16: lm-kjv, the six causal mixers with 3 seeds each, one job at a time,
# then `compare` into compare.md and `report`. Run from the repository root; --resume runs only what is not yet ok.
set -euo pipefail
OUT=results/cpu/lm-3seeds
python run_suite.py run lm-kjv --profile cpu --attn "ea;ea:order=2;softmax;linear;retention;mamba" --seeds 3 \
  --job-timeout 900 --out "$OUT" --resume
python run_suite.py regenerate   # every compare table of results/generated.yaml
python run_suite.py report "$OUT"
