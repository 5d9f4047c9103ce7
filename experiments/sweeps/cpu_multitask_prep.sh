#!/usr/bin/env bash
# Inputs of experiments/sweeps/cpu_multitask.yaml: the folk corpus, its image codec, the corpus tokenized with it,
# and the log-mel cache of the reader's audio settings. Every stage resumes; rerun after an interruption.
#   bash experiments/sweeps/cpu_multitask_prep.sh [OUT]      (default OUT: runs/folk; ~12 minutes on 2 cores)
# Audio is a source (log-mel frames) and never a target in the sweep, so no audio codec is trained: encoding the
# corpus's ~19 hours of audio with the CPU EnCodec would take about half an hour more. With AUDIO_CODEC=1 the
# script also trains a folk audio codec (500 steps) and tokenizes the audio, for a mix with midi2audio.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/folk}
MM=${MUSICMOE:-.venv/bin/musicmoe}
stamp() { echo "== $(date +%H:%M:%S) $*"; }
stamp corpus
$MM data build --config corpus/folk.yaml --out "$OUT/corpus" --quiet
if [ ! -f "$OUT/image_codec/image_codec.pt" ]; then
  stamp image codec
  $MM codec train image --config image_codec/folk.yaml corpus.out="$OUT/corpus" run.out_dir="$OUT" run.name=image_codec
fi
AUDIO_ARGS=()
if [ "${AUDIO_CODEC:-0}" = 1 ] && [ ! -f "$OUT/audio_codec/audio_codec.pt" ]; then
  stamp audio codec
  $MM codec train audio --config audio_codec/folk.yaml corpus.out="$OUT/corpus" run.out_dir="$OUT" run.name=audio_codec \
    audio_codec.train.max_steps=500 audio_codec.train.val_every=250
fi
if [ "${AUDIO_CODEC:-0}" = 1 ]; then AUDIO_ARGS=(--audio-codec "$OUT/audio_codec/audio_codec.pt"); fi
stamp tokens
$MM data tokenize "$OUT/corpus" --out "$OUT/tokens" --no-progress \
  --image-codec "$OUT/image_codec/image_codec.pt" "${AUDIO_ARGS[@]}"
stamp log-mel features
$MM data features "$OUT/corpus" --config experiment/folk_omr.yaml --workers 2 --no-progress
stamp done
