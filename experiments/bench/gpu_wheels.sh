#!/usr/bin/env bash
# Wheels for experiments/bench/gpu_check.sh on the GPU machine, whose image (Python 3.12, no network) lacks
# deepspeed, encodec, jiwer, omegaconf, pretty_midi, mir_eval, verovio, soundfile and vector-quantize-pytorch.
# Downloads them, with the pure-Python dependencies the image also lacks, into .whl/ (ignored by git; carry it
# with the run, whose command then starts with
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#     .whl/*.whl && export PYTHONPATH=/tmp/site
# ). Runs here, on the development machine; PYTHON (default .venv/bin/python) must have torch installed.
set -euo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
mkdir -p .whl
plat=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
# binary wheels for the GPU machine's Python, without their dependencies (the image already has torch, numpy, ...)
python3 -m pip download -q --no-deps --only-binary=:all: "${plat[@]}" -d .whl \
  jiwer rapidfuzz mido omegaconf mir_eval decorator verovio hjson pydantic pydantic_core annotated-types \
  typing-inspection typing_extensions pretty_midi importlib_resources six soundfile cffi pycparser \
  vector-quantize-pytorch==1.32.0 einx==0.4.3 loguru==0.7.3 torch-einops-utils==0.2.0 frozendict==2.5.1
# deepspeed and encodec ship only source distributions: build pure-Python wheels here against the local torch
# (no build isolation, or pip would fetch a CUDA torch just to build them; DS_BUILD_OPS=0: no compiled ops).
py=${PYTHON:-$top/.venv/bin/python}
DS_BUILD_OPS=0 "$py" -m pip wheel -q --no-deps --no-build-isolation -w .whl deepspeed encodec
ls .whl
du -sh .whl
