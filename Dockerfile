# syntax=docker/dockerfile:1
# One Dockerfile, one target per image (build from the repository root):
#
#   docker build --target features -t shopstream-features .   # serving images: no torch
#   docker build --target ranker   -t shopstream-ranker .
#   docker build --target gateway  -t shopstream-gateway .
#   docker build --target trainer  -t shopstream-trainer .    # torch (CPU wheel): train, evaluate, export
#
# The serving images install pyproject's [project] dependencies only; torch is the
# `train` extra (services/training and bench are its only importers). Every image runs
# as uid 10001 (the Kubernetes manifests' runAsUser) and checks its own health.
# deploy/compose/docker-compose.yml builds these targets; tests/unit/deploy checks both.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS python-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# --- build stages: a virtualenv in /opt/venv, copied whole into the runtime stages ----------

FROM python-base AS serving-build
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml ./
# The dependencies in a layer of their own (rebuilt only when pyproject.toml changes), as
# wheels only: python:3.11-slim has no compiler, and every pinned package ships one.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
 && pip install --only-binary=:all: -r requirements.txt
COPY gen gen
COPY services services
RUN pip install --no-deps .

FROM serving-build AS train-build
# torch's CPU wheels; PyPI's default torch wheel pulls GBs of CUDA libraries.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['train']))" \
        > requirements-train.txt \
 && pip install --only-binary=:all: --extra-index-url "$TORCH_INDEX_URL" -r requirements-train.txt

# --- runtime stages ---------------------------------------------------------------------------

FROM python-base AS runtime
RUN groupadd --system --gid 10001 shopstream \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin shopstream \
 && mkdir -p /app /models /var/lib/shopstream \
 && chown 10001:10001 /app /models /var/lib/shopstream
WORKDIR /app
# /models owned by the user: a fresh named volume mounted there takes this ownership, so the
# trainer job can publish into it (the serving images mount it read-only).
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001

FROM runtime AS features
COPY --from=serving-build /opt/venv /opt/venv
ENV SHOPSTREAM_FEATURES_MODELS_DIR=/models \
    SHOPSTREAM_FEATURES_METRICS_PORT=9102 \
    SHOPSTREAM_FEATURES_METRICS_HOST=0.0.0.0 \
    SHOPSTREAM_FEATURES_DATADIR=/var/lib/shopstream/faust
EXPOSE 9102
# Ready = partitions assigned and the stores answer (GET /healthz/ready on the metrics port).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import os, sys; from services.stack.processes import http_ok; sys.exit(not http_ok(int(os.environ['SHOPSTREAM_FEATURES_METRICS_PORT']), '/healthz/ready', 2))"
CMD ["shopstream", "features"]

FROM runtime AS ranker
COPY --from=serving-build /opt/venv /opt/venv
ENV SHOPSTREAM_RANKER_ADDR=0.0.0.0:50051 \
    SHOPSTREAM_RANKER_MODELS_DIR=/models \
    SHOPSTREAM_RANKER_METRICS_PORT=9103 \
    SHOPSTREAM_RANKER_METRICS_HOST=0.0.0.0 \
    SHOPSTREAM_RANKER_PREFER_GPU=false
EXPOSE 50051 9103
# grpc.health.v1: SERVING once a model is loaded and warmed. With TLS configured, point it at
# the plaintext health-only port (SHOPSTREAM_RANKER_HEALTH_ADDR) instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import os, sys; from services.stack.processes import grpc_serving; sys.exit(not grpc_serving('127.0.0.1:' + os.environ['SHOPSTREAM_RANKER_ADDR'].rpartition(':')[2], 2))"
CMD ["shopstream", "ranker"]

FROM runtime AS gateway
COPY --from=serving-build /opt/venv /opt/venv
ENV SHOPSTREAM_GATEWAY_ADDR=0.0.0.0:50052 \
    SHOPSTREAM_GATEWAY_METRICS_PORT=9104 \
    SHOPSTREAM_GATEWAY_METRICS_HOST=0.0.0.0
EXPOSE 50052 9104
# grpc.health.v1: SERVING once Redis answers and the catalog is loaded. With TLS configured, point it
# at the plaintext health-only port (SHOPSTREAM_GATEWAY_HEALTH_ADDR) instead. API tokens come from
# SHOPSTREAM_GATEWAY_TOKENS_FILE (docs/security.md); the gateway does not start without them.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import os, sys; from services.stack.processes import grpc_serving; sys.exit(not grpc_serving('127.0.0.1:' + os.environ['SHOPSTREAM_GATEWAY_ADDR'].rpartition(':')[2], 2))"
CMD ["shopstream", "gateway"]

# A batch job, not a server: no health check. e.g.
#   docker run --rm -v $PWD/models:/models -v $PWD/data:/data:ro shopstream-trainer \
#       train --data /data/Beauty.txt --models-dir /models
FROM runtime AS trainer
COPY --from=train-build /opt/venv /opt/venv
ENTRYPOINT ["shopstream"]
CMD ["--help"]
