#!/usr/bin/env bash
# Runs the daemon on this machine: starts (or installs) PostgreSQL and RabbitMQ, builds
# leadpipe, and serves with deploy/leadpipe.example.toml (or the file given as $1).
# The database is created and migrated on start.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
cargo build --profile dist --bin leadpipe
exec ./target/dist/leadpipe serve --config "${1:-deploy/leadpipe.example.toml}"
