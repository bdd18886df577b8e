#!/usr/bin/env bash
# The whole test suite: starts (or installs) PostgreSQL and RabbitMQ, checks formatting
# and lints, runs every Rust test against the real services, then the acceptance checks
# where ../shared exists.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh

# Compiled dependencies are kept outside the checkout (cargo's build directory; the final
# binaries still land in ./target), so a fresh clone on a machine that has run the suite
# before compiles only the project's own crates: the debug build for the tests and the
# optimised one the acceptance checks run. The cache is emptied when it outgrows
# LEADPIPE_BUILD_CACHE_MAX_GB (default 30): each checkout adds its own crates' artifacts.
# LEADPIPE_BUILD_CACHE=off builds everything inside ./target as cargo does by default.
BUILD_CACHE=${LEADPIPE_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/leadpipe/build}
if [ "$BUILD_CACHE" != off ]; then
  if [ -d "$BUILD_CACHE" ]; then
    used_gb=$(du -s --block-size=1G "$BUILD_CACHE" 2>/dev/null | cut -f1)
    if [ "${used_gb:-0}" -gt "${LEADPIPE_BUILD_CACHE_MAX_GB:-30}" ]; then
      echo "== build cache $BUILD_CACHE holds ${used_gb} GiB; emptying it"
      rm -rf "$BUILD_CACHE"
    fi
  fi
  mkdir -p "$BUILD_CACHE"
  export CARGO_BUILD_BUILD_DIR=$BUILD_CACHE
fi
# One build per clone: incremental state would only cost time and disk.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

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
# The tests wait on the services (a daemon starting, a broker's confirm, a mailbox) far
# more than they compute: four at a time on two cores took the end-to-end suite from 312
# to 206 s on one machine.
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-4}
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
