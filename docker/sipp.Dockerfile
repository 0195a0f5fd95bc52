# docker/sipp.Dockerfile — SIPp (Debian's sip-tester, SIPp 3.6) with the test bed's
# scenarios, for the agents and callers services of docker-compose.yml.
# Build from the repository root: docker build -f docker/sipp.Dockerfile .
FROM debian:bookworm-slim

# bookworm's SIPp 3.6.1 is the one the test bed uses; not pinned further.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends sip-tester \
    && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* \
    && useradd --system --uid 10002 --user-group --home-dir /tmp --shell /usr/sbin/nologin sipp

COPY sipp/ /opt/cti/sipp/
COPY docker/agents.sh docker/callers.sh /opt/cti/docker/
# Executable even from a checkout that lost the mode bits.
RUN chmod 0755 /opt/cti/docker/agents.sh /opt/cti/docker/callers.sh

# SIPp writes its trace and screen files to the working directory.
WORKDIR /tmp
USER 10002
CMD ["/opt/cti/docker/agents.sh"]
