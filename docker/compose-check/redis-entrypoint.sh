#!/bin/sh
# docker/compose-check/redis-entrypoint.sh — the redis stand-in's entrypoint
# (standins.Dockerfile): like the official image's, it runs redis-server as user
# redis when started as root, from /data.
set -eu

if [ "${1:-}" = redis-server ] && [ "$(id -u)" = 0 ]; then
    chown -R redis:redis /data
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
exec "$@"
