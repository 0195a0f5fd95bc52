# docker/cti.Dockerfile — the cti daemon for docker-compose.yml.
#
# The image installs the wheel built from this checkout, as an operator would: the
# migrations, the demo plan and the sidebar's page are package data, found through
# importlib.resources, so no source tree is needed at run time.
# Build from the repository root: docker build -f docker/cti.Dockerfile .
#
# Every pip step runs under docker/with-build-ca.sh with the build secret build_ca
# mounted: behind a proxy that intercepts TLS, CTI_BUILD_CA names that proxy's CA
# (docker-compose.yml), and pip trusts it too. The secret and the script are mounted
# for the step only (BuildKit), so neither is in any layer or the image's history.
FROM python:3.11-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cti/ cti/
RUN --mount=type=secret,id=build_ca,required=false \
    --mount=type=bind,source=docker/with-build-ca.sh,target=/tmp/with-build-ca.sh \
    sh /tmp/with-build-ca.sh pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

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
RUN --mount=type=secret,id=build_ca,required=false \
    --mount=type=bind,source=docker/with-build-ca.sh,target=/tmp/with-build-ca.sh \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        >/tmp/requirements.txt \
    && sh /tmp/with-build-ca.sh pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY --from=wheel /dist/ /tmp/dist/
COPY docker/cti-start.sh docker/cti-start.sh
RUN --mount=type=secret,id=build_ca,required=false \
    --mount=type=bind,source=docker/with-build-ca.sh,target=/tmp/with-build-ca.sh \
    chmod 0755 docker/cti-start.sh \
    && sh /tmp/with-build-ca.sh pip install --no-deps /tmp/dist/cti-*.whl \
    && rm -rf /tmp/dist \
    && cti --help >/dev/null

USER 10001
# 4573 FastAGI, 8080 HTTP (CTI_AGI_BIND, CTI_HTTP_BIND).
EXPOSE 4573 8080
CMD ["/app/docker/cti-start.sh"]
