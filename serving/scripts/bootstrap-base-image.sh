#!/usr/bin/env bash
# Makes a local Python base image for building the serving image where no registry is
# reachable (CI, air-gapped machines): starts Docker if needed, then debootstraps Debian
# bookworm (Python 3.11) and imports it as local/python-base:bookworm.
#
# Idempotent: reuses a running daemon and an existing image. Needs root the first time
# (apt-get, dockerd, debootstrap). Users with a registry never need this: the Dockerfile's
# default base is python:3.11-slim.
#
# The host's CA bundle goes into this LOCAL base image only, so pip can reach the package
# index through an intercepting proxy; the Dockerfile users build from carries no CA.
set -euo pipefail

IMAGE="${BASE_IMAGE_TAG:-local/python-base:bookworm}"
SUITE="${DEBIAN_SUITE:-bookworm}"
CACHE="${MSO_CACHE_DIR:-${HOME:-/root}/.cache/modelservice}"
HOST_CA="${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
DOCKERD_LOG="${DOCKERD_LOG:-/tmp/modelservice-dockerd.log}"

log() { echo "bootstrap-base-image: $*" >&2; }

# A daemon killed without cleanup (a machine's session ending, say) leaves its pid files
# behind. When that pid is reused by an unrelated process, dockerd believes its containerd
# still runs, waits for a socket that never comes and gives up. Remove pid files that do not
# name a live dockerd/containerd.
clear_stale_pidfiles() {
  local file pid
  for file in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
    [ -f "$file" ] || continue
    pid=$(cat "$file" 2>/dev/null || true)
    if [ -z "$pid" ] || ! grep -qE '^(dockerd|containerd)$' "/proc/$pid/comm" 2>/dev/null; then
      log "removing stale $file (pid ${pid:-none} is not a Docker daemon)"
      rm -f "$file"
    fi
  done
}

ensure_docker() {
  if docker info >/dev/null 2>&1; then
    return
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    log "installing Debian's Docker engine"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  fi
  if ! pgrep -x dockerd >/dev/null 2>&1; then
    clear_stale_pidfiles
    log "starting dockerd (log: $DOCKERD_LOG)"
    # No bridge or iptables: builds and containers use the host network (loopback only).
    nohup dockerd --iptables=false --ip6tables=false --bridge=none >"$DOCKERD_LOG" 2>&1 &
  fi
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return
    sleep 1
  done
  log "dockerd did not come up; see $DOCKERD_LOG"
  exit 1
}

ensure_base_image() {
  if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "reusing $IMAGE"
    return
  fi
  if ! command -v debootstrap >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  mkdir -p "$CACHE"
  ROOTFS="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
  trap 'rm -rf "$ROOTFS"' EXIT
  local root="$ROOTFS"
  log "debootstrapping $SUITE into $root"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    "$SUITE" "$root" >"$CACHE/debootstrap.log" 2>&1 || {
    tail -20 "$CACHE/debootstrap.log" >&2
    exit 1
  }
  if [[ -f "$HOST_CA" ]]; then
    cp "$HOST_CA" "$root/etc/ssl/certs/ca-certificates.crt"
  fi
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  log "importing $IMAGE"
  tar -C "$root" -c . | docker import \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    - "$IMAGE" >/dev/null
}

ensure_docker
if [[ "${1:-}" != "--docker-only" ]]; then
  ensure_base_image
fi
