# syntax=docker/dockerfile:1
# Three images from one file, installed the way .ci/run installs (pip install of this project's
# extras from pyproject.toml):
#   --target worker : TensorFlow, the workers and the training job; ships the published models
#   --target light  : the bot, the HTTP API and the producers, no TensorFlow (about a tenth of the size)
#   --target dashboard : rq-dashboard (pinned) on the same RQ as the workers, with our JSON jobs
# Pinned to a patch release (a digest cannot be looked up from these offline machines).
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LOG_FORMAT=json \
    MODEL_DIR=/models \
    DATA_DIR=/data
WORKDIR /app
RUN useradd --create-home --uid 10001 app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY worker ./worker
COPY bot ./bot
COPY api ./api

FROM base AS light
# This project itself, with the version ranges of pyproject.toml (DL3013 is about pinning a
# named package from the index).
# hadolint ignore=DL3013
RUN pip install ".[bot,api]"
USER 10001
CMD ["sentiment-bot"]

FROM base AS dashboard
# hadolint ignore=DL3013
RUN pip install ".[dashboard]"
USER 10001
EXPOSE 9181
# Behind basic auth and same-origin checks (shared/commands/dashboard.py).
CMD ["sentiment-dashboard", "--bind", "0.0.0.0", "--port", "9181"]

FROM base AS worker
# hadolint ignore=DL3013
RUN pip install ".[worker]"
# A named volume mounted on /models starts as a copy of this: the shipped model.
COPY --chown=10001:10001 models /models
USER 10001
STOPSIGNAL SIGTERM
CMD ["sentiment-worker"]
