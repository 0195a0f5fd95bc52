# docker/compose-check/standins.Dockerfile — local stand-ins for the official images
# that docker-compose.yml and docker/*.Dockerfile name, for scripts/compose-check only.
#
# The check runs where no image registry is reachable, only Debian's and PyPI's
# package mirrors. scripts/compose-check makes a Debian root with debootstrap, imports
# it as cti-check/debootstrap:SUITE, and builds each stage below from it with
# Debian's packages. Users run docker-compose.yml with the official images; what the
# stand-ins do differently is listed in scripts/compose-check's header.
#
#   docker build -f standins.Dockerfile --target postgres -t cti-check/postgres:16-bookworm .
ARG BOOKWORM=cti-check/debootstrap:bookworm

# python:3.11-slim-bookworm: Debian's Python 3.11 in a venv at /usr/local, so that
# python and pip are /usr/local/bin/{python,pip} and pip installs without PEP 668's
# "externally managed" refusal, as in the official image.
FROM ${BOOKWORM} AS python
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /usr/local \
    && /usr/local/bin/python -c "import sys, tomllib; assert sys.version_info[:2] == (3, 11)"
ENV LANG=C.UTF-8
CMD ["python3"]

# postgres:16-bookworm: Debian's PostgreSQL 15 (bookworm has no 16) behind an
# entrypoint that does the part of the official one the compose file relies on:
# POSTGRES_USER, POSTGRES_PASSWORD (scram-sha-256 over TCP) and POSTGRES_DB on first
# start, data in /var/lib/postgresql/data, pg_isready on PATH, runs as postgres.
FROM ${BOOKWORM} AS postgres
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-common \
    && sed -ri 's/#?\s*create_main_cluster\s*=.*/create_main_cluster = false/' \
        /etc/postgresql-common/createcluster.conf \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 0755 /usr/local/bin/docker-entrypoint.sh
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]

# redis:7-bookworm: Debian's Redis 7.0 with an entrypoint that, like the official
# one, drops from root to user redis and works in /data.
FROM ${BOOKWORM} AS redis
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server redis-tools \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o redis -g redis /data
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 0755 /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
