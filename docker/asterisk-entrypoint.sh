#!/bin/sh
# docker/asterisk-entrypoint.sh — start Asterisk in the asterisk container.
#
# Renders asterisk/etc into /etc/asterisk with asterisk/render-config (the same step
# as scripts/asterisk-sandbox; its CTI_* settings come from the container's
# environment, CTI_AMI_SECRET is required), gives the files to the asterisk group
# like the sandbox does, then replaces itself with Asterisk in the foreground, as
# user asterisk. Arguments are passed on to asterisk (the image's CMD is -vvv).
#
# Asterisk resolves the host name in pjsip.conf's trunk identify section once, when
# it loads the file; a name that does not resolve then drops that identify with only
# an ERROR in the log, and calls from there go unrecognised. So wait until
# CTI_TRUNK_HOST resolves (on a compose network: until its container runs) and fail,
# to be restarted, if it never does; so do the peers of CTI_PBX_PEERS (the other
# PBXes' trunks). (Agents register: no address to resolve.)
set -eu

if [ -z "${CTI_AMI_SECRET:-}" ]; then
    echo "asterisk-entrypoint: error: CTI_AMI_SECRET is not set (see .env.example)" >&2
    exit 1
fi

RESOLVE_TIMEOUT=60   # seconds

wait_for_host() {   # name value
    case $2 in
        "" | *[!0-9.]*) ;;      # a host name: look it up below
        *) return 0 ;;          # an IPv4 address: nothing to resolve
    esac
    waited=0
    until getent hosts "$2" >/dev/null; do
        if [ "$waited" -ge "$RESOLVE_TIMEOUT" ]; then
            echo "asterisk-entrypoint: error: $1=$2 does not resolve after ${RESOLVE_TIMEOUT}s (is that container running?)" >&2
            exit 1
        fi
        if [ "$waited" -eq 0 ]; then
            echo "asterisk-entrypoint: waiting for $1=$2 to resolve" >&2
        fi
        sleep 1
        waited=$((waited + 1))
    done
}
wait_for_host CTI_TRUNK_HOST "${CTI_TRUNK_HOST:-127.0.0.1}"
# The inter-PBX trunks are identified by their peers' names the same way (name=host:port).
old_ifs=$IFS
IFS=,
for peer in ${CTI_PBX_PEERS:-}; do
    IFS=$old_ifs
    address=${peer#*=}
    wait_for_host CTI_PBX_PEERS "${address%:*}"
done
IFS=$old_ifs

/opt/cti/asterisk/render-config /etc/asterisk >/dev/null
# The secret is in manager.conf: readable by root and the asterisk group only.
chown -R root:asterisk /etc/asterisk
chmod 0750 /etc/asterisk
chmod 0640 /etc/asterisk/*.conf
install -d -o asterisk -g asterisk /run/asterisk

exec /usr/sbin/asterisk -f -n -U asterisk -G asterisk "$@"
