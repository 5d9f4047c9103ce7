#!/usr/bin/env bash
# Every GPU check of issue 7 in one run, for the GPU machine (one H100/H200; nothing installed there beyond its
# image): training-step throughput of our paper-size model (dense and modality-routed MoE) against HF BART and
# torch.nn.Transformer, eager and compiled; host-device sync check; profiler table of our step; KV-cache vs full
# decoding at 256/1024 tokens; a tiny end-to-end `musicmoe train` with DeepSpeed ZeRO-2 + bf16 (and its resume).
#
#   # here, once: wheels the GPU image lacks, and the tiny token shards + codecs for the end-to-end run (.gpu/)
#   bash experiments/bench/gpu_wheels.sh && .venv/bin/python experiments/bench/gpu_tiny_data.py
#   # there (run from the repo root; carry .whl and .gpu; $OUT comes back):
#   bash experiments/bench/gpu_check.sh
#   # here, the same steps at small size on the CPU (a dry run of the script):
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_SIZE=small PYTHON=.venv/bin/python bash experiments/bench/gpu_check.sh
#
# Each step has its own timeout, logs to $OUT/<step>.log (and stdout), and a failed step does not stop the
# others; steps run in order of importance within GPU_CHECK_BUDGET seconds (default 450). The summary table
# (experiments/bench/gpu_summary.py) is printed last. Environment: OUT (default: a new temp dir),
# GPU_CHECK_DEVICE (cuda|cpu), GPU_CHECK_SIZE (paper|small), GPU_CHECK_BUDGET, PYTHON (default python3).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

DEVICE=${GPU_CHECK_DEVICE:-cuda}
SIZE=${GPU_CHECK_SIZE:-paper}
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET:-450}
OUT=${OUT:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # `import musicmoe` without installing it
T0=$SECONDS
STEPS="$OUT/steps.tsv"
: > "$STEPS"

# step NAME LIMIT_S COMMAND...: run under `timeout` (capped by what is left of the budget), log to $OUT/NAME.log
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - (SECONDS - T0)))
  if ((left < 30)); then
    printf '%s\tskipped\t0\t%s\n' "$name" "$limit" >>"$STEPS"
    echo "== $name: skipped (${left}s of the ${BUDGET}s budget left)"
    return
  fi
  ((limit > left)) && limit=$left
  echo "== $name (limit ${limit}s, t=$((SECONDS - T0))s): $*"
  local t=$SECONDS
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t))" "$limit" >>"$STEPS"
  echo "== $name: exit $rc after $((SECONDS - t))s"
}

# (a) packages the GPU image lacks (built here by experiments/bench/gpu_wheels.sh), then what we run on
if [ "$DEVICE" = cuda ] && compgen -G ".whl/*.whl" >/dev/null; then
  step install 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
step env 60 bash -c "command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader; \"$PY\" -c 'import sys, torch, lightning; print(\"python\", sys.version.split()[0], \"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"lightning\", lightning.__version__); import deepspeed, musicmoe; print(\"deepspeed\", deepspeed.__version__, \"musicmoe from\", musicmoe.__file__)'"

if [ "$SIZE" = paper ]; then
  TIMING=(--warmup 3 --steps 5 --rounds 3)
  DECODE=(--lengths 128,1024 --full-max 128)  # eager decoding is host-bound (~55 ms/step): full re-decoding at 1024 takes minutes
  COMPILE=()
else  # CPU dry run: just enough to exercise every code path (compiled: tracing only, no code generation)
  TIMING=(--warmup 1 --steps 1 --rounds 1)
  DECODE=(--lengths 16,32 --full-max 32 --batch 2 --src-len 16)
  COMPILE=(--compile-backend aot_eager)
  COMPILE_STEP=eager
fi
BENCH=(experiments/bench/train_step.py --size "$SIZE" --device "$DEVICE")

# (b) eager: ours dense + MoE, torch.nn.Transformer, HF BART; then (d) sync check and profile of our two models
step train_eager 210 "$PY" "${BENCH[@]}" "${TIMING[@]}" --json "$OUT/train_eager.json" \
  --sync-check 3 --profile "$OUT/profile.txt"

# (b2) what DeepSpeed's bf16 mode trains with: bf16 parameters, fp32 master weights (ours, the MoE also with
# per-group slices instead of the grouped GEMM, and HF BART; eager)
step train_bf16 150 "$PY" "${BENCH[@]}" "${TIMING[@]}" --precision bf16 --only dense,moe,moe_split,bart \
  --json "$OUT/train_bf16.json"

# (e) greedy decoding, KV cache vs full re-decoding, modality-routed MoE model; profile of a short cached decode
step decode 150 "$PY" experiments/bench/decode.py --size "$SIZE" --device "$DEVICE" --moe "${DECODE[@]}" \
  --json "$OUT/decode.json" --profile "$OUT/decode_profile.txt" --profile-len 64

# (e2) the decoding step compiled as one graph over the static cache (CUDA graphs), fp32 so that its tokens must equal
# the eager cache's and full re-decoding's; and the CPU operator counts (experiments/bench/op_count.py)
step decode_compiled 150 "$PY" experiments/bench/decode.py --size "$SIZE" --device "$DEVICE" --moe --fp32 \
  --targets lmx "${DECODE[@]}" --compile-step "${COMPILE_STEP:-inductor}" --json "$OUT/decode_compiled.json"
step op_count 60 "$PY" experiments/bench/op_count.py --compile --json "$OUT/op_count.json"

# (f) tiny end-to-end training through the real CLI: DeepSpeed ZeRO-2, bf16 on the GPU, 2 loader workers with
# pinned memory; 6 steps (checkpoint at 3 and 6), then the same run resumed to 8 steps
if [ "$DEVICE" = cuda ]; then ACC=(trainer.accelerator=gpu trainer.precision=bf16-mixed); else ACC=(trainer.accelerator=cpu); fi
E2E=("$PY" -m musicmoe.cli.main train data.tokens=.gpu/tokens image_codec.checkpoint=.gpu/codecs/image_codec.pt
  audio_codec.checkpoint=.gpu/codecs/audio_codec.pt data.batch_size=2 data.bucket_batches=2 data.num_workers=2
  data.tasks.omr=1.0 data.tasks.amt=1.0 data.tasks.lmx2midi=1.0 model.d_model=64 model.n_heads=2
  model.enc_layers=1 model.dec_layers=2 model.d_ff=128 model.subdecoder_dim=32 model.max_src_len=1280
  model.max_tgt_len=1280 "${ACC[@]}" trainer.strategy=deepspeed trainer.deepspeed_stage=2
  trainer.checkpoint_every_n_steps=3 trainer.log_every_n_steps=1 trainer.progress=plain trainer.progress_every=1
  optim.fused=true optim.warmup_steps=2 eval.every_n_steps=0 run.out_dir="$OUT/e2e")
if [ -d .gpu/tokens ] && [ -f .gpu/codecs/image_codec.pt ]; then
  RUN_E2E=$(printf '%q ' "${E2E[@]}")
  step e2e 180 bash -c "{ $RUN_E2E run.name=zero2 trainer.max_steps=6 && $RUN_E2E run.name=zero2 trainer.max_steps=8; } \
|| { echo 'retrying with optim.fused=false'; $RUN_E2E run.name=zero2_unfused optim.fused=false trainer.max_steps=6; }"
else
  printf 'e2e\tno .gpu/tokens\t0\t0\n' >>"$STEPS"
  echo "== e2e: skipped, no .gpu/ (build it with: .venv/bin/python experiments/bench/gpu_tiny_data.py)"
fi

# (c) compiled (whole loss computation, ~1-2 min of compilation per model): ours MoE with HF BART eager as the
# baseline of the same process, then ours dense (MoE vs dense compiled; each process measures its own ceiling)
step train_compiled 200 "$PY" "${BENCH[@]}" "${TIMING[@]}" "${COMPILE[@]}" --only moe,bart --compile moe \
  --json "$OUT/train_compiled.json"
step train_compiled_dense 150 "$PY" "${BENCH[@]}" "${TIMING[@]}" "${COMPILE[@]}" --only dense --compile dense \
  --json "$OUT/train_compiled_dense.json"

# (g) if time is left: the model.compile switch inside real training (DeepSpeed ZeRO-2)
if [ -d .gpu/tokens ]; then
  step e2e_compile 120 "${E2E[@]}" run.name=compiled trainer.max_steps=4 model.compile=true
fi

# (h) if time is left: the decoding step with max-autotune (Triton GEMM templates with fused epilogues, CUDA graphs)
if [ "$DEVICE" = cuda ]; then
  step decode_autotuned 150 "$PY" experiments/bench/decode.py --size "$SIZE" --device "$DEVICE" --moe --fp32 \
    --targets lmx "${DECODE[@]}" --compile-step max-autotune --json "$OUT/decode_autotuned.json"
fi

echo "== all steps done after $((SECONDS - T0))s; logs and JSON in $OUT"
"$PY" experiments/bench/gpu_summary.py "$OUT" || { echo "summary failed; steps:"; cat "$STEPS"; }
