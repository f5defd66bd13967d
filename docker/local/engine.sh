#!/bin/sh
# A Docker engine for the container tests (tests/test_containers.py), on a host that reaches
# Debian's packages but no image registry:
#
#   docker/local/engine.sh           # prints the base image's name, or why there is no engine
#
# When no engine answers and this runs as root with apt-get, it installs Debian's docker.io,
# docker-compose and debootstrap, and starts `dockerd --bridge=none --iptables=false` in the
# background: no bridge network exists, so containers run on the host's network only
# (`--network host`, compose `network_mode: host`) and every address stays on loopback.
# Then it builds the base image from Debian's packages (base-image.sh) unless the engine
# already has it: images live in the engine's data-root, so the next run reuses them.
#
# Exit status: 0 with the base image's name on stdout; 3 with one sentence on stderr when
# there is no engine and this host cannot start one; 1 when starting one failed.
# DOCKERD_LOG and DOCKERD_PIDFILE override where the started engine logs and keeps its pid.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
base=${REGROW_BASE_IMAGE:-regrow-base:bookworm}
log=${DOCKERD_LOG:-/var/log/regrow-dockerd.log}
pidfile=${DOCKERD_PIDFILE:-/run/regrow-dockerd.pid}

say() { echo "engine.sh: $*" >&2; }
cannot() { echo "$*" >&2; exit 3; }
answers() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

if ! answers; then
    [ "$(id -u)" = 0 ] || cannot "no Docker engine answers and starting one needs root"
    command -v apt-get >/dev/null 2>&1 || \
        cannot "no Docker engine answers and this host has no apt-get to install Debian's docker.io"
    need=""
    command -v dockerd >/dev/null 2>&1 || need="$need docker.io"
    command -v docker-compose >/dev/null 2>&1 || need="$need docker-compose"
    command -v debootstrap >/dev/null 2>&1 || need="$need debootstrap"
    if [ -n "$need" ]; then
        say "installing$need (Debian's packages)"
        export DEBIAN_FRONTEND=noninteractive
        # A stale package list names versions the mirror no longer has: refresh once on failure.
        apt-get install -y -q --no-install-recommends $need >/dev/null 2>&1 || {
            apt-get update -q >/dev/null 2>&1 || true
            apt-get install -y -q --no-install-recommends $need >/dev/null
        } || { say "apt-get could not install$need"; exit 1; }
    fi
    say "starting dockerd --bridge=none --iptables=false (log $log)"
    mkdir -p "$(dirname "$log")" "$(dirname "$pidfile")"
    # setsid: the engine outlives the test run that started it (its images are the cache).
    setsid dockerd --bridge=none --iptables=false --pidfile "$pidfile" \
        </dev/null >>"$log" 2>&1 &
    i=0
    until answers; do
        i=$((i + 1))
        if [ "$i" -gt 60 ]; then
            say "dockerd did not answer within 60 s; the end of $log:"
            tail -n 20 "$log" >&2
            exit 1
        fi
        sleep 1
    done
fi

if ! docker image inspect "$base" >/dev/null 2>&1; then
    if [ "$base" != regrow-base:bookworm ]; then
        cannot "the base image $base (REGROW_BASE_IMAGE) is not in the engine: docker pull it"
    fi
    if ! command -v debootstrap >/dev/null 2>&1; then
        [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || \
            cannot "the base image $base is missing and building it needs debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            debootstrap >/dev/null
    fi
    say "building $base from Debian's packages (base-image.sh)"
    TAG="$base" "$here/base-image.sh" >&2
fi
echo "$base"
