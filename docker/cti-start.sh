#!/bin/sh
# docker/cti-start.sh — the cti container's command: migrate, seed, serve.
#
#   1. cti db migrate     creates the database if needed and applies the migrations (idempotent;
#                         an advisory lock makes concurrent starts safe)
#   2. cti db seed-demo   only when CTI_SEED_DEMO=1 (the default, for the demo):
#                         loads the demo routing plan and CTI_SEED_CUSTOMERS customers
#                         (default 100000); running it again updates, never duplicates
#   3. exec cti serve     the daemon, as this container's main process (gets SIGTERM)
#
# All other settings are cti's own CTI_* variables (cti/config.py).
set -eu

case ${CTI_SEED_DEMO:-1} in
    1 | yes | true) seed=1 ;;
    0 | no | false) seed=0 ;;
    *) echo "cti-start: error: CTI_SEED_DEMO='$CTI_SEED_DEMO': expected 1 or 0" >&2; exit 1 ;;
esac

cti db migrate
if [ "$seed" = 1 ]; then
    cti db seed-demo --customers "${CTI_SEED_CUSTOMERS:-100000}"
fi
exec cti serve
