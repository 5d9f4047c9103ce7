#!/usr/bin/env bash
# Inputs of experiments/sweeps/cpu_multitask.yaml: the folk corpus, its image and audio codecs, the corpus tokenized
# with both, and the log-mel cache of the reader's audio settings. Every stage resumes; rerun after an interruption.
#   bash experiments/sweeps/cpu_multitask_prep.sh [OUT]      (default OUT: runs/folk; ~25 minutes on 2 cores)
# The audio codec trains 500 steps (audio_codec/folk.yaml: 1,500): the sweep asks about OMR, and its audio
# targets (midi2audio) need codes a codec can make, not a codec a transcriber can read.
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
if [ ! -f "$OUT/audio_codec/audio_codec.pt" ]; then
  stamp audio codec
  $MM codec train audio --config audio_codec/folk.yaml corpus.out="$OUT/corpus" run.out_dir="$OUT" run.name=audio_codec \
    audio_codec.train.max_steps=500 audio_codec.train.val_every=250
fi
stamp tokens
$MM data tokenize "$OUT/corpus" --out "$OUT/tokens" --no-progress \
  --image-codec "$OUT/image_codec/image_codec.pt" --audio-codec "$OUT/audio_codec/audio_codec.pt"
stamp log-mel features
$MM data features "$OUT/corpus" --config experiment/folk_omr.yaml --workers 2 --no-progress
stamp done
