#!/bin/bash
# docker/callers.sh — the callers service of docker-compose.yml (profile "load").
#
# One SIPp UAC (sipp/caller.xml) places the demo calls of sipp/calls-demo.csv to
# Asterisk from port 5080: the trunk is recognised by source address and port
# (asterisk/etc/pjsip.conf), so all calls come from this one SIPp, as on the test
# bed. The service shares the agents container's network namespace, so its address
# is CTI_TRUNK_HOST=agents. Exit status is SIPp's: 0 when every call succeeded.
#
# Settings (environment, defaults in brackets):
#   CALLERS_TARGET   Asterisk's SIP address            [asterisk:5060]
#   CALLERS_CALLS    calls to place in total (-m)      [20]
#   CALLERS_RATE     new calls per second (-r)         [1]
#   CALLERS_LIMIT    calls at the same time (-l)       [10]
#   CALLERS_HOLD_MS  how long each caller stays (-d)   [10000]
#   CALLERS_CSV      injection file (-inf)             [/opt/cti/sipp/calls-demo.csv]
#   SIPP_LOCAL_IP    address to send from and announce [SIPP_LOCAL_HOST's address]
#   SIPP_LOCAL_HOST  name to look that address up by   [this container's host name;
#                    docker-compose.yml sets agents, whose network this one shares]
set -euo pipefail

die() { printf 'callers: error: %s\n' "$*" >&2; exit 1; }

target=${CALLERS_TARGET:-asterisk:5060}
calls=${CALLERS_CALLS:-20}
rate=${CALLERS_RATE:-1}
limit=${CALLERS_LIMIT:-10}
hold=${CALLERS_HOLD_MS:-10000}
csv=${CALLERS_CSV:-/opt/cti/sipp/calls-demo.csv}
for pair in "CALLERS_CALLS=$calls" "CALLERS_LIMIT=$limit" "CALLERS_HOLD_MS=$hold"; do
    [[ ${pair#*=} =~ ^[0-9]+$ ]] || die "$pair is not a whole number"
done
[[ $rate =~ ^[0-9]+([.][0-9]+)?$ ]] || die "CALLERS_RATE=$rate is not a number"
[[ -r $csv ]] || die "CALLERS_CSV=$csv is not readable"
ip=${SIPP_LOCAL_IP:-$(getent hosts "${SIPP_LOCAL_HOST:-$HOSTNAME}" | awk '{ print $1; exit }')}
[[ -n $ip ]] || die "cannot find this container's address (set SIPP_LOCAL_IP)"

echo "callers: $calls call(s) to $target at $rate/s (at most $limit at once, $hold ms each) from $ip:5080"
screens=$(mktemp "${TMPDIR:-/tmp}/callers-screens.XXXXXX")
trap 'rm -f "$screens"' EXIT
status=0
# -nostdin: no keyboard; the live screen goes to /dev/null and the final one is
# printed from the -trace_screen file.
sipp "$target" -sf /opt/cti/sipp/caller.xml -inf "$csv" -i "$ip" -p 5080 \
    -m "$calls" -r "$rate" -l "$limit" -d "$hold" \
    -nostdin -trace_screen -screen_file "$screens" >/dev/null || status=$?
cat "$screens"
echo "callers: sipp exited with status $status"
exit "$status"
