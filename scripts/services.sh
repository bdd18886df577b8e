#!/usr/bin/env bash
# Makes sure the services the tests talk to are installed (from Debian's packages) and
# running on loopback: PostgreSQL on 127.0.0.1:5432 accepting the `postgres` user without a
# password, RabbitMQ on 127.0.0.1:5672 with guest/guest, Dovecot (IMAP) on 127.0.0.1:1143
# with user and password `leadpipe` (STARTTLS offered, plaintext login allowed on loopback)
# and on 127.0.0.1:1993 with implicit TLS, and an SMTP sink on 127.0.0.1:2525 (STARTTLS
# offered, not required) and 127.0.0.1:2465 (implicit TLS) that keeps every message it is
# sent in one Maildir. Safe to run any number of times. Installing needs root.
#
# Dovecot's and the sink's state (configuration, mail, logs, PID files) lives under
# $LEADPIPE_SERVICES_DIR (default /tmp/leadpipe-services); the sink's Maildir is
# $LEADPIPE_SERVICES_DIR/smtp-sink/Maildir. The TLS servers use a certificate for
# 127.0.0.1 and localhost signed by a private CA made once: $LEADPIPE_SERVICES_DIR/tls/ca.pem
# is what a client's `ca_file` names to trust them.
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

tls_dir="$services_dir/tls"

# A private CA and a server certificate for 127.0.0.1 and localhost, made once: clients
# trust the servers by naming $tls_dir/ca.pem, never by turning verification off.
ensure_certificates() {
  if [ -s "$tls_dir/ca.pem" ] && [ -s "$tls_dir/server.pem" ] && [ -s "$tls_dir/server.key" ]; then
    return 0
  fi
  command -v openssl >/dev/null 2>&1 || apt_install openssl
  log "making a test CA and a server certificate for 127.0.0.1 in $tls_dir"
  mkdir -p "$tls_dir"
  local work
  work=$(mktemp -d "$tls_dir/new.XXXXXX")
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=leadpipe test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" > "$work/ext"
  openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -days 3650 -extfile "$work/ext" -out "$work/server.pem" 2>/dev/null
  chmod 644 "$work/ca.pem" "$work/server.pem"
  chmod 600 "$work/ca.key" "$work/server.key"
  # Moved into place whole, so a half-made set is never used.
  for f in ca.key ca.pem server.key server.pem; do mv "$work/$f" "$tls_dir/$f"; done
  rm -rf "$work"
}

# $1 port, $2 `plain`, `starttls` or `tls`: logs in as leadpipe over that transport.
imap_answers() {
  "$system_python" - "$1" "${2:-plain}" "$tls_dir/ca.pem" <<'PY' >/dev/null 2>&1
import imaplib, ssl, sys
port, mode, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if mode == "tls":
    m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ssl.create_default_context(cafile=ca), timeout=5)
else:
    m = imaplib.IMAP4("127.0.0.1", port, timeout=5)
    if mode == "starttls":
        m.starttls(ssl.create_default_context(cafile=ca))
m.login("leadpipe", "leadpipe")
m.logout()
PY
}

# $1 port, $2 `plain`, `starttls` or `tls`: an EHLO over that transport.
smtp_answers() {
  "$system_python" - "$1" "${2:-plain}" "$tls_dir/ca.pem" <<'PY' >/dev/null 2>&1
import smtplib, ssl, sys
port, mode, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if mode == "tls":
    s = smtplib.SMTP_SSL("127.0.0.1", port, context=ssl.create_default_context(cafile=ca), timeout=5)
else:
    s = smtplib.SMTP("127.0.0.1", port, timeout=5)
    if mode == "starttls":
        s.starttls(context=ssl.create_default_context(cafile=ca))
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
# STARTTLS is offered on 1143 and implicit TLS listens on 1993, with the test certificate.
ensure_dovecot() {
  ensure_system_python
  if imap_answers 1143 starttls && imap_answers 1993 tls; then
    return 0
  fi
  local dir="$services_dir/dovecot"
  local running=""
  if port_open 1143; then
    if ! imap_answers 1143 || [ ! -s "$dir/run/master.pid" ]; then
      log "something on 127.0.0.1:1143 is not the test Dovecot (login leadpipe/leadpipe fails); stop it"
      return 1
    fi
    # The test Dovecot, configured without TLS by an older version of this script.
    running=$(cat "$dir/run/master.pid")
  fi
  if ! command -v dovecot >/dev/null 2>&1 || [ ! -e /usr/lib/dovecot/imap ]; then
    log "installing Dovecot (IMAP)"
    apt_install dovecot-imapd
  fi
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
ssl = yes
ssl_cert = <$tls_dir/server.pem
ssl_key = <$tls_dir/server.key
ssl_min_protocol = TLSv1.2
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
    address = 127.0.0.1
    port = 1993
    ssl = yes
  }
}
CONF
  if [ -n "$running" ]; then
    # A reload reads the new configuration and keeps the sessions that are open.
    log "reloading Dovecot (PID $running) with STARTTLS on 1143 and TLS on 1993"
    kill -HUP "$running"
  else
    log "starting Dovecot on 127.0.0.1:1143 (STARTTLS) and 1993 (TLS) (state in $dir)"
    # Without -F it detaches; its PID is in $dir/run/master.pid. Its output goes to a file
    # so that it holds no pipe of whoever ran this script (a `| tee` would never end).
    dovecot -c "$dir/dovecot.conf" </dev/null >>"$dir/start.log" 2>&1
  fi
  wait_until "Dovecot on 127.0.0.1:1143" imap_answers 1143
  wait_until "Dovecot STARTTLS on 127.0.0.1:1143" imap_answers 1143 starttls
  wait_until "Dovecot TLS on 127.0.0.1:1993" imap_answers 1993 tls
}

# An SMTP server that accepts everything and keeps each message (with X-MailFrom and
# X-RcptTo headers) in $services_dir/smtp-sink/Maildir, for the tests of outgoing mail:
# plain text with STARTTLS offered (not required) on 2525, implicit TLS on 2465.
ensure_smtp_sink() {
  ensure_system_python
  if ! "$system_python" -c 'import aiosmtpd' >/dev/null 2>&1; then
    log "installing the aiosmtpd SMTP sink"
    apt_install python3-aiosmtpd
  fi
  start_sink 2525 starttls sink.pid --tlscert "$tls_dir/server.pem" --tlskey "$tls_dir/server.key" --no-requiretls
  start_sink 2465 tls sinks.pid --smtpscert "$tls_dir/server.pem" --smtpskey "$tls_dir/server.key"
}

# $1 port, $2 the transport it must answer on, $3 its PID file, then aiosmtpd's TLS options.
start_sink() {
  local port=$1 mode=$2 pidfile=$3
  shift 3
  local dir="$services_dir/smtp-sink"
  if smtp_answers "$port" "$mode"; then
    return 0
  fi
  if port_open "$port"; then
    local pid
    pid=$(cat "$dir/$pidfile" 2>/dev/null || true)
    if [ -z "$pid" ] || ! grep -q aiosmtpd "/proc/$pid/cmdline" 2>/dev/null; then
      log "something on 127.0.0.1:$port is not the test SMTP sink with $mode; stop it"
      return 1
    fi
    # The test sink, started without TLS by an older version of this script.
    log "restarting the SMTP sink on 127.0.0.1:$port with $mode"
    kill "$pid"
    for _ in $(seq 1 20); do port_open "$port" || break; sleep 0.25; done
  fi
  mkdir -p "$dir"
  log "starting the SMTP sink on 127.0.0.1:$port ($mode; Maildir $dir/Maildir)"
  setsid nohup "$system_python" -m aiosmtpd -n -l "127.0.0.1:$port" "$@" \
    -c aiosmtpd.handlers.Mailbox "$dir/Maildir" >"$dir/sink-$port.log" 2>&1 < /dev/null &
  echo $! > "$dir/$pidfile"
  wait_until "the SMTP sink on 127.0.0.1:$port" smtp_answers "$port" "$mode"
}

ensure_postgres
ensure_rabbitmq
ensure_certificates
ensure_dovecot
ensure_smtp_sink
ensure_phone_oracle
log "PostgreSQL, RabbitMQ, Dovecot (IMAP 127.0.0.1:1143, TLS 1993) and the SMTP sink (127.0.0.1:2525, TLS 2465) are up; CA $tls_dir/ca.pem"
