#!/bin/sh
# docker/compose-check/postgres-entrypoint.sh — the postgres stand-in's entrypoint
# (standins.Dockerfile): the subset of the official image's docker-entrypoint.sh that
# docker-compose.yml uses. On the first start (empty PGDATA) it creates the cluster
# with POSTGRES_USER / POSTGRES_PASSWORD and the database POSTGRES_DB; then it runs
# the command as user postgres, listening on every address of the container.
set -eu

if [ "$(id -u)" = 0 ]; then
    install -d -o postgres -g postgres -m 0700 "$PGDATA"
    install -d -o postgres -g postgres -m 2775 /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

user=${POSTGRES_USER:-postgres}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ "${POSTGRES_DB:-$user}" != postgres ]; then
        pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
        createdb -U "$user" "${POSTGRES_DB:-$user}"
        pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    fi
    echo "postgres-entrypoint: initialised $PGDATA"
fi

if [ "${1:-}" = postgres ]; then
    exec "$@" -c listen_addresses='*'
fi
exec "$@"
