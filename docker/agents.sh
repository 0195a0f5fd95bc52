#!/bin/bash
# docker/agents.sh — the agents' phones in the agents container of docker-compose.yml.
#
# Agent 200N is a SIPp UAS (sipp/agent.xml) on port 507N with media ports 160N0,
# as on the loopback test bed (sipp/README.md, asterisk/etc/pjsip.conf); here they
# listen on the container's address, which Asterisk knows as CTI_AGENT_HOST=agents.
# Runs until stopped; if one agent's SIPp exits, the others are stopped too and the
# script exits non-zero, so that the container is restarted as a whole.
#
#   agents.sh           run agents 2001-2006
#   agents.sh --check   exit 0 when all six SIPps run (the compose healthcheck)
#
# Settings (environment):
#   AGENT_RING_MS    ring time before answering, ms        [1000]
#   SIPP_LOCAL_IP    address to listen on and announce     [SIPP_LOCAL_HOST's address]
#   SIPP_LOCAL_HOST  name to look that address up by       [this container's host name]
set -euo pipefail

AGENTS=(1 2 3 4 5 6)
SCENARIO=/opt/cti/sipp/agent.xml
RING_MS=${AGENT_RING_MS:-1000}

if [[ ${1:-} == --check ]]; then
    running=0
    for comm in /proc/[0-9]*/comm; do
        [[ $(cat "$comm" 2>/dev/null) == sipp ]] && running=$((running + 1))
    done
    ((running >= ${#AGENTS[@]})) || { echo "agents: $running of ${#AGENTS[@]} SIPp running" >&2; exit 1; }
    exit 0
fi

die() { printf 'agents: error: %s\n' "$*" >&2; exit 1; }

[[ $RING_MS =~ ^[0-9]+$ ]] || die "AGENT_RING_MS='$RING_MS' is not a number of milliseconds"
ip=${SIPP_LOCAL_IP:-$(getent hosts "${SIPP_LOCAL_HOST:-$HOSTNAME}" | awk '{ print $1; exit }')}
[[ -n $ip ]] || die "cannot find this container's address (set SIPP_LOCAL_IP)"

pids=()
stop() {
    trap - TERM INT
    kill "${pids[@]}" 2>/dev/null || true
    wait || true
}
trap 'stop; exit 0' TERM INT

for n in "${AGENTS[@]}"; do
    # -nostdin: no keyboard; the screen SIPp redraws every second goes to /dev/null,
    # errors still reach the container log on stderr.
    sipp -sf "$SCENARIO" -i "$ip" -p "507$n" -mp "160${n}0" -d "$RING_MS" -nostdin >/dev/null &
    pids+=($!)
    echo "agents: agent 200$n on $ip:507$n (pid $!, ring ${RING_MS} ms)"
done

# The first SIPp to end ends the container.
status=0
wait -n || status=$?
echo "agents: a SIPp agent exited (status $status); stopping the others" >&2
stop
exit $((status == 0 ? 1 : status))
