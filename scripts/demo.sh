#!/usr/bin/env bash
# Set up and upscale a photo from the fixtures. Uses the official weights when
# they are in the cache (or CCSR_WEIGHTS is set); otherwise writes a RANDOM
# tiny checkpoint and says so: the output then shows the pipeline working,
# not real super-resolution.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SHARED=${CCSR_SHARED:-../shared}
IN=${1:-$SHARED/fixtures/images/chelsea.png}
mkdir -p out
if .venv/bin/ccsr weights path >/dev/null 2>&1; then
  .venv/bin/ccsr upscale "$IN" -o out/demo.png --scale 2
else
  echo "No official weights found (run 'ccsr weights download' for them)."
  echo "Using RANDOM weights of the tiny test architecture: the picture will not be a real upscale."
  .venv/bin/ccsr weights random --config "$SHARED/fixtures/ccsr-tiny.yaml" -o out/random-tiny.safetensors
  .venv/bin/ccsr upscale "$IN" -o out/demo.png --scale 2 --steps 20 --weights out/random-tiny.safetensors --config "$SHARED/fixtures/ccsr-tiny.yaml"
fi
echo "wrote out/demo.png"
