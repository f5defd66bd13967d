#!/bin/sh
# Build a base image for docker/Dockerfile from Debian's packages alone, for hosts that reach a
# Debian mirror and a Python package index but no image registry:
#
#   sudo docker/local/base-image.sh                       # -> regrow-base:bookworm
#   docker build -f docker/Dockerfile --build-arg BASE_IMAGE=regrow-base:bookworm -t regrow:latest .
#
# Needs debootstrap and a running Docker engine. SUITE, MIRROR and TAG override the defaults.
set -eu
suite=${SUITE:-bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
tag=${TAG:-regrow-base:$suite}
root=$(mktemp -d -t regrow-rootfs.XXXXXX)  # under $TMPDIR (default /tmp); it must allow devices
trap 'rm -rf "$root"' EXIT

debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$suite" "$root" "$mirror"
# CAs this host trusts beyond Debian's (e.g. a proxy that re-signs TLS): the image build's pip
# and uv reach the package index through the same proxy.
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
fi
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' - "$tag"
echo "built $tag"
