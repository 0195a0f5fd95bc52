#!/bin/sh
# docker/with-build-ca.sh — run a build command (pip install ...) in docker/cti.Dockerfile
# trusting the build secret build_ca as well as pip's own CA bundle:
#   sh /tmp/with-build-ca.sh pip install -r requirements.txt
#
# Behind a proxy that intercepts TLS, pip fails with "self-signed certificate in
# certificate chain". docker-compose.yml passes the PEM file named by CTI_BUILD_CA as
# the build secret build_ca; the RUN steps that use this script mount it (BuildKit:
# RUN --mount=type=secret,id=build_ca,required=false) and mount this script itself,
# so that neither the CA nor the script is in any layer, build argument or history
# of the image. Without a certificate in it (docker/build-ca.pem, the default, has
# none) the command runs as it is. pip's build-isolation subprocess inherits PIP_CERT.
set -eu

ca=/run/secrets/build_ca
if grep -qs -- '-----BEGIN CERTIFICATE-----' "$ca"; then
    bundle=$(mktemp)
    trap 'rm -f "$bundle"' EXIT
    cat "$(python -c 'import pip._vendor.certifi as c; print(c.where())')" "$ca" >"$bundle"
    export PIP_CERT="$bundle"
    echo "with-build-ca: pip trusts the build secret build_ca as well" >&2
fi
"$@"
