# syntax=docker/dockerfile:1
# One image for every component; the component is the first argument:
#   medevents ingest | medevents processor | medevents operator
# Built in two stages: wheels and a virtualenv in the builder, only the virtualenv in the runtime
# image. The `local` extra (embedded nats-server and SecantusDB) is never installed here.

# Pinned by full version; pin by digest too (python:3.11.14-slim-bookworm@sha256:...) in your
# registry mirror for bit-for-bit rebuilds.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/medevents
# Dependencies first, the locked versions with their hashes (requirements/image.lock, `make lock`;
# this layer is reused while the lock is unchanged), then the code without resolving anything.
COPY requirements/image.lock ./requirements/
RUN /opt/medevents/bin/pip install --require-hashes -r requirements/image.lock
COPY pyproject.toml README.md LICENSE ./
COPY medevents ./medevents
COPY ingest ./ingest
COPY processor ./processor
COPY operator ./operator
RUN /opt/medevents/bin/pip install --no-deps . \
 && /opt/medevents/bin/pip check \
 && /opt/medevents/bin/python -m compileall -q /opt/medevents/lib \
 && /opt/medevents/bin/medevents --help > /dev/null

FROM ${PYTHON_IMAGE} AS app
LABEL org.opencontainers.image.title="medevents" \
      org.opencontainers.image.description="Durable, per-patient ordered, exactly-once ingestion of medical events" \
      org.opencontainers.image.licenses="ISC"
# A fixed numeric user, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 medevents \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin medevents
COPY --from=builder /opt/medevents /opt/medevents
# Read-only root filesystem friendly: no bytecode writes at run time (compiled in the builder),
# unbuffered logs, temporary files only under /tmp (an emptyDir in the chart).
ENV PATH=/opt/medevents/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp
WORKDIR /tmp
USER 10001:10001
EXPOSE 3000 3001 8080
ENTRYPOINT ["medevents"]
CMD ["ingest"]

# The inner dev loop (Tiltfile: target "dev") syncs changed Python files into the virtualenv, so
# there the app user owns it. Never used for releases.
FROM app AS dev
USER 0:0
RUN chown -R 10001:10001 /opt/medevents
USER 10001:10001

# The release image: the last stage, so a plain `docker build .` produces it.
FROM app AS runtime
