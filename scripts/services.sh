#!/usr/bin/env bash
# Makes sure the services the tests talk to are installed (from Debian's packages) and
# running on loopback: PostgreSQL on 127.0.0.1:5432 accepting the `postgres` user without a
# password, RabbitMQ on 127.0.0.1:5672 with guest/guest, Dovecot (IMAP) on 127.0.0.1:1143
# with user and password `leadpipe`, and an SMTP sink on 127.0.0.1:2525 that keeps every
# message it is sent in a Maildir. Safe to run any number of times. Installing needs root.
#
# Dovecot's and the sink's state (configuration, mail, logs, PID files) lives under
# $LEADPIPE_SERVICES_DIR (default /tmp/leadpipe-services); the sink's Maildir is
# $LEADPIPE_SERVICES_DIR/smtp-sink/Maildir.
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

services_dir="${LEADPIPE_SERVICES_DIR:-/tmp/leadpipe-services}"
# Debian's own interpreter: its python3-aiosmtpd is installed for it, whatever python3
# comes first on PATH.
system_python=/usr/bin/python3

ensure_system_python() {
  [ -x "$system_python" ] || apt_install python3
}

imap_answers() {
  "$system_python" - "$1" <<'PY' >/dev/null 2>&1
import imaplib, sys
m = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]), timeout=5)
m.login("leadpipe", "leadpipe")
m.logout()
PY
}

smtp_answers() {
  "$system_python" - "$1" <<'PY' >/dev/null 2>&1
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=5)
code, _ = s.ehlo("leadpipe-test")
s.quit()
sys.exit(0 if code == 250 else 1)
PY
}

wait_until() {
  local what=$1; shift
  for _ in $(seq 1 60); do
    "$@" && return 0
    sleep 0.5
  done
  log "$what does not answer; see its log under $services_dir"
  return 1
}

# A real IMAP server for the mailbox tests: plaintext login on loopback only, one user
# (leadpipe/leadpipe, uid 65534 since Dovecot refuses root), mail in a Maildir under
# $services_dir/dovecot/mail.
ensure_dovecot() {
  ensure_system_python
  if imap_answers 1143; then
    return 0
  fi
  if port_open 1143; then
    log "something on 127.0.0.1:1143 is not the test Dovecot (login leadpipe/leadpipe fails); stop it"
    return 1
  fi
  if ! command -v dovecot >/dev/null 2>&1 || [ ! -e /usr/lib/dovecot/imap ]; then
    log "installing Dovecot (IMAP)"
    apt_install dovecot-imapd
  fi
  local dir="$services_dir/dovecot"
  mkdir -p "$dir/run" "$dir/state" "$dir/mail/leadpipe"
  chmod 755 "$services_dir" "$dir" "$dir/mail"
  echo "leadpipe:{PLAIN}leadpipe:65534:65534::$dir/mail/leadpipe" > "$dir/users"
  chown -R 65534:65534 "$dir/mail"
  cat > "$dir/dovecot.conf" <<CONF
protocols = imap
listen = 127.0.0.1
base_dir = $dir/run
state_dir = $dir/state
log_path = $dir/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
passdb {
  driver = passwd-file
  args = scheme=PLAIN $dir/users
}
userdb {
  driver = passwd-file
  args = $dir/users
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = 1143
  }
  inet_listener imaps {
    port = 0
  }
}
CONF
  log "starting Dovecot on 127.0.0.1:1143 (state in $dir)"
  # Without -F it detaches; its PID is in $dir/run/master.pid. Its output goes to a file
  # so that it holds no pipe of whoever ran this script (a `| tee` would never end).
  dovecot -c "$dir/dovecot.conf" </dev/null >>"$dir/start.log" 2>&1
  wait_until "Dovecot on 127.0.0.1:1143" imap_answers 1143
}

# An SMTP server that accepts everything and keeps each message (with X-MailFrom and
# X-RcptTo headers) in $services_dir/smtp-sink/Maildir, for the tests of outgoing mail.
ensure_smtp_sink() {
  ensure_system_python
  if smtp_answers 2525; then
    return 0
  fi
  if port_open 2525; then
    log "something on 127.0.0.1:2525 does not answer EHLO; stop it"
    return 1
  fi
  if ! "$system_python" -c 'import aiosmtpd' >/dev/null 2>&1; then
    log "installing the aiosmtpd SMTP sink"
    apt_install python3-aiosmtpd
  fi
  local dir="$services_dir/smtp-sink"
  mkdir -p "$dir"
  log "starting the SMTP sink on 127.0.0.1:2525 (Maildir $dir/Maildir)"
  setsid nohup "$system_python" -m aiosmtpd -n -l 127.0.0.1:2525 \
    -c aiosmtpd.handlers.Mailbox "$dir/Maildir" >"$dir/sink.log" 2>&1 < /dev/null &
  echo $! > "$dir/sink.pid"
  wait_until "the SMTP sink on 127.0.0.1:2525" smtp_answers 2525
}

ensure_postgres
ensure_rabbitmq
ensure_dovecot
ensure_smtp_sink
ensure_phone_oracle
log "PostgreSQL, RabbitMQ, Dovecot (IMAP 127.0.0.1:1143) and the SMTP sink (127.0.0.1:2525) are up"
