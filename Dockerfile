# JumpScope web app. CPU image by default:
#   docker build -t jumpscope .
#   docker run -p 8000:8000 jumpscope                      # serves the embedded demo on :8000
# CUDA image (the base image and the torch wheel index are build arguments):
#   docker build -t jumpscope:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 .
#   docker run --gpus all -p 8000:8000 jumpscope:cuda
# Your own model and SAEs: mount them and pass flags, e.g.
#   docker run -v /models:/models -p 8000:8000 jumpscope jumpscope serve --host 0.0.0.0 \
#     --model /models/gemma-2-2b --sae /models/saes/layer12
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# Where the torch wheel comes from: the CPU build by default (never a multi-GB CUDA build on CPU).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    JUMPSCOPE_CACHE=/opt/jumpscope/cache \
    JUMPSCOPE_DATA_DIR=/opt/jumpscope/data \
    PATH=/opt/venv/bin:$PATH

# Python (already present in the python:* images; CUDA images need it), venv support and npm for htmx.
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs npm ca-certificates \
    && (python3 -m venv --help >/dev/null 2>&1 || apt-get install -y --no-install-recommends python3 python3-venv) \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
RUN python3 -m venv /opt/venv && pip install --upgrade pip setuptools

# Dependencies first (cached while only the source changes): torch at the release constraints-cpu.txt pins, taken
# from TORCH_INDEX: the exact CPU build (`+cpu`) from the CPU index, the same release without the local label from a
# CUDA index (e.g. 2.13.0+cu126). The chosen pin is kept in /opt/torch-constraint.txt for the install below.
COPY constraints-cpu.txt ./
RUN version="$(sed -n 's/^torch==//p' constraints-cpu.txt)" \
    && case "${TORCH_INDEX}" in */cpu|*/cpu/) ;; *) version="${version%%+*}" ;; esac \
    && echo "torch==${version}" > /opt/torch-constraint.txt \
    && pip install -c /opt/torch-constraint.txt --extra-index-url "${TORCH_INDEX}" torch

# htmx and swagger-ui from the pinned npm packages (package-lock.json; .npmrc turns install scripts, and with them
# @scarf/scarf's telemetry, off). The wheel build copies the files it needs into the package — no CDN.
COPY package.json package-lock.json .npmrc ./
RUN npm ci --no-audit --no-fund --loglevel=error

# The package itself, installed from its wheel (not editable): templates, static files and the npm assets travel
# inside it, so the sources are removed afterwards.
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY app app
COPY templates templates
COPY static static
RUN pip install -c /opt/torch-constraint.txt --extra-index-url "${TORCH_INDEX}" ".[web]" \
    && cd / && rm -rf /src
WORKDIR /opt/jumpscope

# Build the embedded demo (tiny LM, SAE, index, report) into the image, so the container starts offline.
RUN useradd --create-home --uid 1000 jumpscope \
    && mkdir -p /opt/jumpscope/cache /opt/jumpscope/data \
    && chown -R jumpscope /opt/jumpscope
USER jumpscope
RUN jumpscope demo build

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/health')" || exit 1
CMD ["jumpscope", "serve", "--host", "0.0.0.0", "--port", "8000"]
