#!/usr/bin/env bash
# Fuzzing of every parser of external input (fuzz/, see docs/FUZZING.md).
#
#   scripts/fuzz.sh seed           rebuild the seed corpora in fuzz/corpus/<target>/ from
#                                  tests/fixtures and, where it exists, ../shared/corpus
#                                  (or $FUZZ_SHARED_CORPUS)
#   scripts/fuzz.sh short          every target for $FUZZ_SHORT_SECS (default 12) seconds,
#                                  after replaying fuzz/regressions/: the test suite's run
#   scripts/fuzz.sh long [SECONDS] every target for SECONDS (default 600) each
#   scripts/fuzz.sh list           the target names
#
# Any crash, panic, hang (over $FUZZ_TIMEOUT_SECS, default 10) or out-of-memory fails the
# script; libFuzzer keeps the input under fuzz/artifacts/<target>/. Targets run
# $FUZZ_JOBS (default 2) at a time. The build goes to $FUZZ_TARGET_DIR (default
# ~/.cache/leadpipe/fuzz-target). Needs the nightly toolchain; cargo-fuzz is installed
# when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(form_body telegram_update whatsapp_webhook twilio_webhook site_chat mime_message
  ami_frames normalize_contact)
# One build serves every mode: cargo fuzz's default (optimised, with debug assertions and
# overflow checks) without a sanitizer: the code is safe Rust, so panics and overflow
# checks are what find defects, and both the build and the runs are faster without ASan.
BUILD_FLAGS=(--sanitizer none)
TRIPLE=$(rustc +nightly -vV | sed -n 's/^host: //p')
# The instrumented build lives outside the checkout, so a fresh clone on the same machine
# (CI) rebuilds only the project's own crates, not every dependency.
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/leadpipe/fuzz-target}
# Intermediate files too (the test command points cargo's build directory at the main
# workspace's cache, which the nightly instrumented build must not share).
unset CARGO_BUILD_BUILD_DIR
BIN_DIR=$CARGO_TARGET_DIR/$TRIPLE/release
JOBS=${FUZZ_JOBS:-2}
TIMEOUT=${FUZZ_TIMEOUT_SECS:-10}

log() { printf 'fuzz: %s\n' "$*" >&2; }

ensure_tools() {
  if ! rustup toolchain list | grep -q '^nightly'; then
    log "installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
  fi
  if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
  fi
}

build() {
  ensure_tools
  log "building the targets"
  (cd fuzz && CARGO_INCREMENTAL=0 cargo +nightly fuzz build "${BUILD_FLAGS[@]}")
}

# Writes the seed corpora. Seeds from tests/fixtures are named `seed-*` (committed);
# those from ../shared/corpus `shared-*` (ignored by git: the set is not the project's).
seed() {
  python3 - "$@" <<'PY'
import hashlib, json, os, pathlib, shutil, sys

root = pathlib.Path(".")
out = root / "fuzz" / "corpus"
sources = [("seed", root / "tests" / "fixtures")]
shared = pathlib.Path(os.environ.get("FUZZ_SHARED_CORPUS", "../shared/corpus"))
if shared.is_dir():
    sources.append(("shared", shared))

for target in ["form_body", "telegram_update", "whatsapp_webhook", "twilio_webhook",
               "site_chat", "mime_message", "ami_frames", "normalize_contact"]:
    folder = out / target
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("seed-*"):
        old.unlink()
    for old in folder.glob("shared-*"):
        old.unlink()

def put(prefix, target, name, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    digest = hashlib.sha1(data).hexdigest()[:8]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]
    (out / target / f"{prefix}-{safe}-{digest}").write_bytes(data)

def jsonl(path):
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]

def files(folder, pattern):
    return sorted(folder.glob(pattern)) if folder.is_dir() else []

for prefix, base in sources:
    # Web forms: the content type on the first line, then the body.
    for case in jsonl(base / "forms" / "cases.jsonl"):
        body = case.get("body")
        if not isinstance(body, str):
            body = json.dumps(body, ensure_ascii=False)
        put(prefix, "form_body", case["id"], f"{case.get('content_type') or ''}\n{body}")
        # The people in the cases as typed, for the normalizer.
        expect = case.get("expect") or {}
        region = expect.get("default_region") or ""
        contact = [region, expect.get("name") or "", "", "", expect.get("email") or "",
                   expect.get("phone_e164") or "", expect.get("company") or "",
                   expect.get("message") or ""]
        put(prefix, "normalize_contact", case["id"], "\n".join(map(str, contact)))
    # Generic events (site chat): the JSON body alone.
    for case in jsonl(base / "chat" / "events" / "cases.jsonl"):
        body = case.get("body")
        if body is None:
            continue
        if not isinstance(body, str):
            body = json.dumps(body, ensure_ascii=False)
        put(prefix, "site_chat", case["id"], body)
    # Telegram: each getUpdates answer whole (the poller) and each update alone (a webhook).
    for path in files(base / "chat" / "telegram", "*.json"):
        raw = path.read_bytes()
        put(prefix, "telegram_update", path.stem, raw)
        for update in json.loads(raw).get("result", []):
            put(prefix, "telegram_update", f"{path.stem}-{update.get('update_id')}",
                json.dumps(update, ensure_ascii=False))
    for path in files(base / "chat" / "whatsapp", "*.json"):
        put(prefix, "whatsapp_webhook", path.stem, path.read_bytes())
    for path in files(base / "telephony" / "twilio", "*.txt"):
        put(prefix, "twilio_webhook", path.stem, path.read_bytes())
    for path in files(base / "email", "*.eml"):
        put(prefix, "mime_message", path.stem, path.read_bytes())
    # AMI: the first byte is the read buffer's size, so each transcript goes in read
    # whole and read in 1-byte pieces.
    for path in files(base / "telephony" / "ami", "*.txt"):
        raw = path.read_bytes()
        put(prefix, "ami_frames", path.stem, b"\x3f" + raw)
        put(prefix, "ami_frames", path.stem + "-bytewise", b"\x00" + raw)
    # Phone numbers in many regions and spellings: a sample of the oracle's cases.
    oracle = base / "phones" / "oracle.tsv"
    if oracle.is_file():
        rows = [l.split("\t") for l in oracle.read_text("utf-8").splitlines()
                if l and not l.startswith("#")]
        for n, row in enumerate(rows[:: max(1, len(rows) // 60)]):
            if len(row) >= 2:
                put(prefix, "normalize_contact", f"phone-{n}",
                    "\n".join([row[0], "", "", "", "", row[1], "", ""]))

for target in sorted(os.listdir(out)):
    count = len(list((out / target).iterdir()))
    print(f"fuzz: {target}: {count} inputs", file=sys.stderr)
PY
}

# Replays every kept crash of a target: each must now pass.
replay() {
  local target=$1 dir=fuzz/regressions/$1
  [ -d "$dir" ] || return 0
  local inputs=("$dir"/*)
  [ -e "${inputs[0]}" ] || return 0
  "$BIN_DIR/$target" -runs=1 "${inputs[@]}" >"fuzz/logs/$target.replay.log" 2>&1 || {
    log "$target: a kept regression fails again (fuzz/logs/$target.replay.log)"
    tail -30 "fuzz/logs/$target.replay.log" >&2
    return 1
  }
}

# Runs one target for $1 seconds on its corpus; prints its last stats line.
run_one() {
  local secs=$1 target=$2 log=fuzz/logs/$2.log
  mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
  if "$BIN_DIR/$target" "fuzz/corpus/$target" \
    -artifact_prefix="fuzz/artifacts/$target/" \
    -max_total_time="$secs" -timeout="$TIMEOUT" -rss_limit_mb=2048 \
    -max_len=262144 -print_final_stats=1 >"$log" 2>&1; then
    local execs
    execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
    log "$target: ok, $execs runs in ${secs}s ($(grep -oE 'cov: [0-9]+' "$log" | tail -1))"
  else
    log "$target: FAILED (fuzz/logs/$target.log; input under fuzz/artifacts/$target/)"
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" >&2 || tail -30 "$log" >&2
    return 1
  fi
}

run_all() {
  local secs=$1 failed=0 pids=() names=()
  mkdir -p fuzz/logs
  for target in "${TARGETS[@]}"; do
    replay "$target" || failed=1
  done
  for target in "${TARGETS[@]}"; do
    run_one "$secs" "$target" &
    pids+=($!)
    names+=("$target")
    if [ "${#pids[@]}" -ge "$JOBS" ]; then
      wait "${pids[0]}" || failed=1
      pids=("${pids[@]:1}")
      names=("${names[@]:1}")
    fi
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || failed=1
  done
  return "$failed"
}

case "${1:-}" in
  seed) seed ;;
  short)
    build
    run_all "${FUZZ_SHORT_SECS:-12}"
    ;;
  long)
    build
    run_all "${2:-600}"
    ;;
  list) printf '%s\n' "${TARGETS[@]}" ;;
  *)
    echo "usage: $0 seed | short | long [SECONDS] | list" >&2
    exit 2
    ;;
esac
