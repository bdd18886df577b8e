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

# Every parser of external input fuzzed for a few seconds, the kept crashes replayed
# first (docs/FUZZING.md); a crash fails this script.
echo "== fuzz: short run"
bash scripts/fuzz.sh short

# The acceptance checks of every channel the daemon has, run from the project root as a
# client would (set -e: a failing check fails this script).
for script in ../shared/acceptance/forms.py ../shared/acceptance/mail.py \
  ../shared/acceptance/chat.py ../shared/acceptance/telephony.py; do
  if [ -f "$script" ]; then
    echo "== acceptance: $script"
    python3 "$script"
    passed=$((passed + 1))
  else
    echo "== acceptance: $script not found, skipped"
  fi
done
echo "$passed passed, $failed failed"
