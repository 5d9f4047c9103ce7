#!/usr/bin/env bash
# Wheels for experiments/bench/gpu_check.sh on the GPU machine (Python 3.12 there, no network): the shared list
# (deepspeed, encodec, jiwer, omegaconf, pretty_midi, mir_eval, verovio, ...) plus what our image codec imports
# (vector-quantize-pytorch and its pure-Python dependencies), into .whl/ (ignored by git; carry it with the run).
set -euo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
bash "$top/../shared/tools/gpu-wheels.sh"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  vector-quantize-pytorch==1.32.0 einx==0.4.3 loguru==0.7.3 torch-einops-utils==0.2.0 frozendict==2.5.1
du -sh .whl
