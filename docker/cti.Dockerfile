# docker/cti.Dockerfile — the cti daemon for docker-compose.yml.
#
# The package is installed in editable mode from /app, so that cti.db.migrate finds
# the migrations where it looks for them, Path(__file__).parents[2] / "sql" =
# /app/sql, and `cti db migrate` works without --sql-dir.
# Build from the repository root: docker build -f docker/cti.Dockerfile .
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/cti --shell /usr/sbin/nologin cti \
    && install -d -o cti -g cti -m 0750 /var/lib/cti

WORKDIR /app

# Dependencies first, read from pyproject.toml: this layer is reused while only the
# code changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        >/tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY README.md ./
COPY cti/ cti/
COPY sql/ sql/
COPY docker/cti-start.sh docker/cti-start.sh
RUN chmod 0755 docker/cti-start.sh \
    && pip install --no-deps -e . \
    && python -m compileall -q cti \
    && cti --help >/dev/null

USER 10001
# 4573 FastAGI, 8080 HTTP (CTI_AGI_BIND, CTI_HTTP_BIND).
EXPOSE 4573 8080
CMD ["/app/docker/cti-start.sh"]
