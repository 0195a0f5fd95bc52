#!/bin/bash
# docker/agents.sh — the agents' phones in the agents container of docker-compose.yml.
#
# Agent 200N is a SIPp phone on port 507N with media ports 160N0, as on the loopback
# test bed (sipp/README.md): it REGISTERs with Asterisk as user 200N with its password
# (sipp/agent-register.xml, refreshed every 4 minutes) and answers the calls Asterisk
# sends to that registration with sipp/agent.xml. Asterisk does not know the phones'
# address in advance, so they may run anywhere Asterisk's SIP port is reachable.
# Runs until stopped; if one agent's SIPp exits (e.g. its password was refused), the
# others are stopped too and the script exits non-zero, so that the container is
# restarted as a whole.
#
#   agents.sh           run agents 2001-2006
#   agents.sh --check   exit 0 when all phones run or wait for Asterisk's name to
#                       resolve (the compose healthcheck; Asterisk starts after it)
#
# Settings (environment):
#   CTI_AGENT_200N_PASSWORD  agent 200N's SIP password, N = 1..6   [required]
#   SIPP_ASTERISK    Asterisk's SIP address, host:port            [asterisk:5060]
#   SKIP_AGENTS      agents that get no SIPp phone, e.g. "2006": your own softphone
#                    registers as that agent (README "Connect your own softphone");
#                    a SIPp phone would take the registration back at its refresh []
#   AGENT_RING_MS    ring time before answering, ms               [1000]
#   SIPP_LOCAL_IP    address to listen on and announce            [SIPP_LOCAL_HOST's address]
#   SIPP_LOCAL_HOST  name to look that address up by              [this container's host name]
set -euo pipefail

AGENTS=(1 2 3 4 5 6)
SCENARIO=/opt/cti/sipp/agent.xml
REGISTER=/opt/cti/sipp/agent-register.xml
RING_MS=${AGENT_RING_MS:-1000}
ASTERISK=${SIPP_ASTERISK:-asterisk:5060}
PIDS=/tmp/cti-agents        # one pid file per phone: the --check reads them

skipped() { [[ " ${SKIP_AGENTS:-} " == *" 200$1 "* ]]; }

if [[ ${1:-} == --check ]]; then
    running=0 wanted=0
    for n in "${AGENTS[@]}"; do
        skipped "$n" && continue
        wanted=$((wanted + 1))
        pid=$(cat "$PIDS/200$n.pid" 2>/dev/null) || continue
        state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || continue
        [[ -n $state && $state != Z ]] && running=$((running + 1))
    done
    ((running >= wanted)) || { echo "agents: $running of $wanted phones running" >&2; exit 1; }
    exit 0
fi

die() { printf 'agents: error: %s\n' "$*" >&2; exit 1; }

[[ $RING_MS =~ ^[0-9]+$ ]] || die "AGENT_RING_MS='$RING_MS' is not a number of milliseconds"
for n in "${AGENTS[@]}"; do
    var=CTI_AGENT_200${n}_PASSWORD
    skipped "$n" || [[ -n ${!var:-} ]] || die "$var is not set (see .env.example)"
done
ip=${SIPP_LOCAL_IP:-$(getent hosts "${SIPP_LOCAL_HOST:-$HOSTNAME}" | awk '{ print $1; exit }')}
[[ -n $ip ]] || die "cannot find this container's address (set SIPP_LOCAL_IP)"
asterisk_host=${ASTERISK%:*}

pids=()
stop() {
    trap - TERM INT
    kill "${pids[@]}" 2>/dev/null || true
    wait || true
}
trap 'stop; exit 0' TERM INT

rm -rf "$PIDS"
mkdir -p "$PIDS"
for n in "${AGENTS[@]}"; do
    if skipped "$n"; then
        echo "agents: agent 200$n has no SIPp phone (SKIP_AGENTS): register your own"
        continue
    fi
    var=CTI_AGENT_200${n}_PASSWORD
    # A subshell that waits for Asterisk's name (its container starts after this one's
    # healthcheck), then becomes the SIPp phone: exec keeps the pid the --check reads.
    # -nostdin: no keyboard; SIPp's screen goes to /dev/null, errors to the container log.
    (
        echo "$BASHPID" >"$PIDS/200$n.pid"
        until getent hosts "$asterisk_host" >/dev/null; do sleep 1; done
        exec sipp "$ASTERISK" -sf "$REGISTER" -oocsf "$SCENARIO" -i "$ip" -p "507$n" \
            -mp "160${n}0" -d "$RING_MS" -s "200$n" -au "200$n" -ap "${!var}" \
            -key expires 300 -key refresh_ms 240000 -m 1 -nostdin >/dev/null
    ) &
    pids+=($!)
    echo "agents: agent 200$n on $ip:507$n registers with $ASTERISK (pid $!, ring ${RING_MS} ms)"
done

((${#pids[@]})) || { echo "agents: every agent skipped; nothing to run" >&2; exec sleep infinity; }
# The first SIPp to end ends the container.
status=0
wait -n || status=$?
echo "agents: a SIPp agent exited (status $status); stopping the others" >&2
stop
exit $((status == 0 ? 1 : status))
