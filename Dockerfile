# ccsr serve on an NVIDIA GPU.
#
#   docker build -t ccsr .
#   docker run --gpus all -p 8000:8000 -e CCSR_API_KEYS=change-me -v ccsr-data:/data ccsr
#
# Weights: mount a file and set CCSR_WEIGHTS (-v /models/real-world_ccsr-fp16.safetensors:/weights/ccsr.safetensors:ro
# -e CCSR_WEIGHTS=/weights/ccsr.safetensors), or let the first start download the official ones
# (3.44 GB) into the /data volume, where later starts find them.
# The CUDA runtime comes from the base image's driver stack; torch's Linux wheel from PyPI is the CUDA build.
FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/data/huggingface \
    CCSR_DATA_DIR=/data \
    CCSR_HOST=0.0.0.0 \
    CCSR_PORT=8000

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /app
# Dependencies first (a layer that survives code changes), pinned by constraints.txt.
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY src ./src
RUN pip install -c constraints.txt . \
    && useradd --create-home --uid 1000 ccsr \
    && mkdir -p /data \
    && chown ccsr:ccsr /data
COPY scripts/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

USER 1000
VOLUME ["/data"]
EXPOSE 8000
# Ready (200) once a worker holds the model; the first start may spend minutes downloading it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30m --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["ccsr", "serve"]
