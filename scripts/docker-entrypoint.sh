#!/usr/bin/env bash
# Container entry point: make sure the weights are there, then run the command
# (by default `ccsr serve`).
#  - CCSR_WEIGHTS set: that file is used as is (a mounted file); it must exist.
#  - otherwise the official weights are downloaded on the first start into
#    $HF_HOME (on the /data volume), and found there on later starts.
#  - CCSR_SKIP_DOWNLOAD=1: never download; start anyway (the server then
#    reports it is not ready until weights appear).
set -euo pipefail
if [ "${1:-}" = "ccsr" ] && [ "${2:-}" = "serve" ]; then
  if [ -n "${CCSR_WEIGHTS:-}" ]; then
    if [ ! -f "$CCSR_WEIGHTS" ]; then
      echo "error: CCSR_WEIGHTS=$CCSR_WEIGHTS does not exist in the container (is the file mounted?)" >&2
      exit 2
    fi
  elif ! ccsr weights path >/dev/null 2>&1 && [ "${CCSR_SKIP_DOWNLOAD:-0}" != "1" ]; then
    echo "No weights yet: downloading the official ones (3.44 GB) into $HF_HOME; later starts reuse them." >&2
    ccsr weights download --timeout "${CCSR_DOWNLOAD_TIMEOUT:-30}" >&2
  fi
fi
exec "$@"
