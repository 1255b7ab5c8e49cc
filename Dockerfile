# roadie in a container. One image runs every roadie command: `roadie worker` by default, and
# `roadie db upgrade` and `roadie web` when given them (compose.yaml runs all three; the
# production checklist, docs/production.md, explains the rest).
#
#   docker build -t roadie .
#   docker run --rm -e ROADIE_URL=postgresql://roadie@db/app roadie db upgrade
#   docker run -e ROADIE_URL=postgresql://roadie@db/app roadie worker --concurrency 8
#
# roadie's CI has no container daemon: .ci/dockerfile-check runs this file's commands in a
# temporary directory and a fresh venv, then the entry point as the image would. Keep the file
# simple enough for it: one command per RUN, the image's own paths under /src, /opt/venv and
# /data.

# 3.11 because it is the Python roadie's CI tests on, so the check above runs what the image
# runs; slim because it is Debian's glibc, on which the binary wheels of psycopg, msgpack and
# greenlet install without a compiler (Alpine's musl would need one), at a third of the full
# image's size.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1
ENV PIP_NO_CACHE_DIR=1
ENV PIP_DISABLE_PIP_VERSION_CHECK=1

# The user every roadie process runs as. Numeric below, so that Kubernetes' runAsNonRoot can
# verify it.
RUN useradd --uid 10001 --user-group --create-home roadie

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Layer 1: roadie with its dashboard (the `web` extra) and psycopg (a dependency of roadie's).
# It is built into a wheel first, and the wheel stays: `roadie env create` installs roadie's
# runtime into a plugin environment from it.
COPY pyproject.toml README.md /src/
COPY core /src/core
RUN pip wheel --no-deps --wheel-dir /src/dist /src
RUN pip install "$(ls /src/dist/roadie-*.whl)[web]"

# Layer 2: the plugins, as pip requirements in plugins.txt: names from an index, versions, or
# paths under plugins/ (put your own wheels or source folders there). Change it and rebuild:
# roadie's layer above stays cached.
COPY plugins /src/plugins
COPY plugins.txt /src/plugins.txt
WORKDIR /src
RUN pip install -r plugins.txt

# The data directory: the SQLite file when no ROADIE_URL is set, the local attachment store,
# plugin environments. Mount a volume there (attachments must outlive the container).
RUN install -d -o roadie -g roadie /data
ENV ROADIE_DATA_DIR=/data
VOLUME /data
WORKDIR /data

USER 10001:10001

# 8000: `roadie web --host 0.0.0.0` (it needs a token then: ROADIE_WEB_TOKEN);
# 9318: roadie-prometheus' metrics, with ROADIE_METRICS_PORT=9318 or --metrics-port 9318.
EXPOSE 8000 9318

# One SIGTERM: the worker claims nothing more, lets its running tasks finish and exits. Give
# the container a stop timeout longer than your longest task (docker stop -t, compose's
# stop_grace_period, Kubernetes' terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM

# No HEALTHCHECK: the image runs three commands and a check fits only one of them. compose.yaml
# checks each service, the worker with `roadie nodes --check NAME`.
ENTRYPOINT ["roadie"]
CMD ["worker"]
