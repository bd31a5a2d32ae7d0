#!/usr/bin/env bash
# The test command: the whole suite, unit and end-to-end, as CI runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin pitcrew
cargo test --workspace --release
