# docker/asterisk.Dockerfile — Asterisk 22 for docker-compose.yml.
#
# The same packages as the loopback test bed's root (scripts/asterisk-sandbox:
# debootstrap of Debian sid with asterisk and asterisk-modules, no Recommends) and
# the same configuration: asterisk/etc rendered by asterisk/render-config at every
# start, from the container's environment (the AMI secret never enters the image).
# Build from the repository root: docker build -f docker/asterisk.Dockerfile .
FROM debian:sid-slim

# Keep only the package's asterisk.conf in /etc/asterisk, as the sandbox does: every
# other file there comes from asterisk/etc (modules.conf has autoload = no).
# Versions are not pinned: sid keeps only its newest, like the sandbox's debootstrap.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        asterisk asterisk-modules \
    && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* \
    && find /etc/asterisk -mindepth 1 -maxdepth 1 ! -name asterisk.conf -exec rm -rf {} + \
    && install -d -o asterisk -g asterisk /run/asterisk

COPY asterisk/ /opt/cti/asterisk/
COPY docker/asterisk-entrypoint.sh /opt/cti/docker/asterisk-entrypoint.sh
# Executable even from a checkout that lost the mode bits.
RUN chmod 0755 /opt/cti/asterisk/render-config /opt/cti/docker/asterisk-entrypoint.sh

# 5060/udp SIP, 5038/tcp AMI, 10000-19999/udp RTP (asterisk/etc/rtp.conf).
EXPOSE 5060/udp 5038/tcp 10000-19999/udp

HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["asterisk", "-rx", "core waitfullybooted"]

ENTRYPOINT ["/opt/cti/docker/asterisk-entrypoint.sh"]
# Extra asterisk options; -vvv logs each dialplan step, as on the test bed.
CMD ["-vvv"]
