#!/usr/bin/env bash
# Make sure a Docker engine answers, installing and starting Debian's docker.io when we are root
# and it is missing. Also installs what the offline image sources need (debootstrap for the Debian
# recipe and the Debian root of local-CPython images, patchelf to relocate a local CPython) and, with
# WITH_RUNSC=1, gVisor's runsc registered as a Docker runtime. Safe to run again: every step
# checks first.
set -euo pipefail

log() { printf 'ensure-engine: %s\n' "$*" >&2; }
is_root() { [ "$(id -u)" = 0 ]; }

apt_updated=
apt_install() {
  if ! is_root; then
    log "need root to install $*; install them yourself"; return 1
  fi
  if [ -z "$apt_updated" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq; apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

# What the offline image sources need. Without them those runtimes are skipped, not the run.
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || apt_install debootstrap \
  || log "debootstrap could not be installed; runtimes needing it will be skipped"
command -v patchelf >/dev/null 2>&1 || apt_install patchelf \
  || log "patchelf could not be installed; local-CPython runtimes will be skipped"

if [ "${WITH_RUNSC:-0}" = 1 ] && ! [ -x /usr/bin/runsc ]; then
  apt_install runsc || log "runsc could not be installed; the gVisor pass will be skipped"
fi

# Register runsc with dockerd when it is installed (gVisor: ptrace platform, no network of its own,
# and --host-uds=open so a step can connect to the one Unix socket of its AWS egress, the only
# host socket scriptbox ever mounts; see SECURITY.md). An older registration of ours without
# --host-uds is upgraded in place.
RUNSC_JSON='{"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--platform=ptrace", "--network=none", "--host-uds=open"]}}}'
RUNSC_JSON_OLD='{"runtimes":{"runsc":{"path":"/usr/bin/runsc","runtimeArgs":["--platform=ptrace","--network=none"]}}}'
runsc_registered_now=0
if [ -x /usr/bin/runsc ] && is_root; then
  mkdir -p /etc/docker
  current="$(tr -d ' \n' </etc/docker/daemon.json 2>/dev/null || true)"
  if [ -z "$current" ] || [ "$current" = "{}" ] || [ "$current" = "$RUNSC_JSON_OLD" ]; then
    printf '%s\n' "$RUNSC_JSON" >/etc/docker/daemon.json
    runsc_registered_now=1
  elif ! grep -q '"runsc"' /etc/docker/daemon.json; then
    log "/etc/docker/daemon.json exists with other settings; add runsc to it by hand: $RUNSC_JSON"
  elif ! grep -q 'host-uds' /etc/docker/daemon.json; then
    log "runsc is registered without --host-uds=open: AWS egress steps under runsc cannot reach their socket"
  fi
fi

if engine_answers; then
  if [ "$runsc_registered_now" = 1 ]; then
    log "reloading dockerd so it sees runsc"
    pkill -HUP -x dockerd || true
    sleep 1
  fi
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  log "no Docker engine: installing Debian's docker.io"
  apt_install docker.io
fi
command -v docker >/dev/null 2>&1 || apt_install docker.io

if ! is_root; then
  log "no Docker engine answers and we are not root: start dockerd, or set DOCKER_HOST"; exit 1
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
  log "starting dockerd (no bridge: containers use network none, tests use loopback only)"
  nohup dockerd --bridge=none --iptables=false --ip-masq=false >/var/log/scriptbox-dockerd.log 2>&1 &
fi
for _ in $(seq 1 60); do
  if engine_answers; then exit 0; fi
  sleep 1
done
log "dockerd did not answer within 60 s; see /var/log/scriptbox-dockerd.log"
tail -20 /var/log/scriptbox-dockerd.log >&2 || true
exit 1
