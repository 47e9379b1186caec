#!/usr/bin/env bash
# Install and start what the tests and the demo need on a Debian 12 machine:
# Docker Engine (bookworm's docker.io), the compose v2 CLI plugin (from trixie's
# docker-compose package, fetched without switching the machine to trixie),
# busybox-static and debootstrap for building images without a registry, and PostgreSQL 15
# (client tools, and the server binaries the direct-access tests run a private server with),
# and Prometheus with promtool (the tests run their own server on 127.0.0.1; the package's
# own service is never started, see install_prometheus).
# Idempotent: what is already installed or running is used as it is.
set -euo pipefail

log() { printf 'setup-engine: %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    log "must run as root (installs packages and starts dockerd)"
    exit 1
  fi
}

apt_updated=0
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq
    apt_updated=1
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_prometheus() {
  # Debian's package would start its service (listening on 0.0.0.0:9090) during the install
  # and at every boot. The tests start their own server on 127.0.0.1 with a private config,
  # so the package's service is kept from starting: a policy-rc.d that refuses every start
  # for the length of the install (only if the machine has none), then the unit disabled.
  if dpkg-query -W -f='${Status}' prometheus 2>/dev/null | grep -q 'install ok installed'; then
    return 0
  fi
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# setup-engine.sh: no service starts while prometheus is installed\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    own_policy=1
  fi
  local status=0
  apt_install prometheus || status=$?
  [ "$own_policy" = 1 ] && rm -f "$policy"
  [ "$status" = 0 ] || exit "$status"
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  elif command -v update-rc.d >/dev/null 2>&1 && [ -e /etc/init.d/prometheus ]; then
    update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
}

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

debian_mirror() {
  # The mirror the machine's own apt sources use, so that nothing else is contacted.
  local uri
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list)
  fi
  printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

install_compose_plugin() {
  if docker compose version >/dev/null 2>&1; then
    return 0
  fi
  log "fetching the compose v2 plugin from Debian trixie"
  local work
  work=$(mktemp -d)
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s trixie main\n' \
    "$(debian_mirror)" >"$work/sources.list"
  local opts=(-o APT::Sandbox::User=root -o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache")
  apt-get "${opts[@]}" update -qq
  (cd "$work" && apt-get "${opts[@]}" download docker-compose >/dev/null)
  dpkg-deb -x "$work"/docker-compose_*.deb "$work/root"
  install -D -m 0755 "$work/root/usr/libexec/docker/cli-plugins/docker-compose" \
    /usr/local/lib/docker/cli-plugins/docker-compose
  rm -rf "$work"
  docker compose version >/dev/null
}

start_engine() {
  if engine_answers; then
    return 0
  fi
  log "starting dockerd"
  mkdir -p /var/log
  nohup dockerd --host unix:///var/run/docker.sock --bridge=none --iptables=false --ip-masq=false \
    >/var/log/lastgood-dockerd.log 2>&1 &
  local deadline=$((SECONDS + 60))
  until engine_answers; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "dockerd did not answer within 60 s; see /var/log/lastgood-dockerd.log"
      tail -n 20 /var/log/lastgood-dockerd.log >&2 || true
      exit 1
    fi
    sleep 0.5
  done
}

need_root
if ! engine_answers; then
  command -v dockerd >/dev/null 2>&1 || apt_install docker.io
fi
# iptables: the security-breach tests isolate disposable network namespaces.
apt_install busybox-static debootstrap postgresql-client-15 postgresql-15 iproute2 iptables curl
install_prometheus
install_compose_plugin
start_engine
log "engine $(docker version --format '{{.Server.Version}}'), $(docker compose version --short 2>/dev/null || docker compose version)"
