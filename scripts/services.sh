#!/usr/bin/env bash
# Makes sure PostgreSQL and RabbitMQ are installed (from Debian's packages) and running
# on loopback: PostgreSQL on 127.0.0.1:5432 accepting the `postgres` user without a
# password, RabbitMQ on 127.0.0.1:5672 with guest/guest. Safe to run any number of times.
# Installing needs root.
set -euo pipefail

log() { printf 'services: %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() {
  local port=$1 what=$2
  for _ in $(seq 1 120); do
    port_open "$port" && return 0
    sleep 0.5
  done
  log "$what did not start listening on port $port"
  return 1
}

apt_updated=0
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    log "$* missing and not running as root: install it with apt-get install $*"
    exit 1
  fi
  if [ "$apt_updated" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if ! port_open 5432; then
    log "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    wait_for_port 5432 PostgreSQL
  fi
  # A fresh Debian cluster asks loopback clients for a password; the daemon's defaults
  # and the tests connect as postgres without one.
  if ! psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; then
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    if [ -w "$hba" ] && ! grep -q '# leadpipe: local trust' "$hba"; then
      log "allowing password-less loopback connections in $hba"
      { echo '# leadpipe: local trust'
        echo 'host all all 127.0.0.1/32 trust'
        echo 'host all all ::1/128 trust'
        cat "$hba"; } > "$hba.new" && mv "$hba.new" "$hba"
      pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    fi
    psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null
  fi
}

ensure_rabbitmq() {
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    log "installing RabbitMQ"
    apt_install rabbitmq-server
  fi
  if ! port_open 5672; then
    log "starting RabbitMQ"
    rabbitmq-server -detached || true
    wait_for_port 5672 RabbitMQ
  fi
}

# The phone-number tests compare with libphonenumber's Python port when it is installed
# (pinned to the plan data the Rust crate carries); without it they use the committed table.
ensure_phone_oracle() {
  local script requirement
  script="$(dirname "$0")/phone_oracle.py"
  command -v python3 >/dev/null 2>&1 || return 0
  python3 "$script" --check 2>/dev/null && return 0
  requirement=$(python3 "$script" --requirement)
  log "installing $requirement for the phone-number oracle"
  python3 -m pip install --quiet --disable-pip-version-check "$requirement" >/dev/null 2>&1 ||
    log "could not install $requirement: the phone tests will use their committed table"
}

ensure_postgres
ensure_rabbitmq
ensure_phone_oracle
log "PostgreSQL and RabbitMQ are up"
