#!/usr/bin/env bash
# The whole test suite: starts (or installs) PostgreSQL and RabbitMQ, checks formatting
# and lints, runs every Rust test against the real services, then the acceptance checks
# where ../shared exists.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh

# Tests make their own databases through this server (sqlx::test and the end-to-end
# helpers); every test drops what it made.
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export LEADPIPE_TEST_AMQP_URL="${LEADPIPE_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== cargo test"
mkdir -p target
# pipefail: a failing test run fails this script.
cargo test --workspace --quiet 2>&1 | tee target/test-output.txt
passed=$(grep -oE '^test result: ok\. [0-9]+ passed' target/test-output.txt | awk '{s+=$4} END {print s+0}')
failed=0

if [ -f ../shared/acceptance/forms.py ]; then
  echo "== acceptance: ../shared/acceptance/forms.py"
  python3 ../shared/acceptance/forms.py
  passed=$((passed + 1))
else
  echo "== acceptance: ../shared/acceptance/forms.py not found, skipped"
fi

if [ -f ../shared/acceptance/mail.py ]; then
  echo "== acceptance: ../shared/acceptance/mail.py"
  python3 ../shared/acceptance/mail.py
  passed=$((passed + 1))
else
  echo "== acceptance: ../shared/acceptance/mail.py not found, skipped"
fi
if [ -f ../shared/acceptance/telephony.py ]; then
  echo "== acceptance: ../shared/acceptance/telephony.py"
  python3 ../shared/acceptance/telephony.py
  passed=$((passed + 1))
else
  echo "== acceptance: ../shared/acceptance/telephony.py not found, skipped"
fi
echo "$passed passed, $failed failed"
