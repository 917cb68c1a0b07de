#!/usr/bin/env bash
# Builds Ravenwatch and runs the example project at the repository root on
# the bundled sample logs.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ravenwatch-target}"
export PYO3_PYTHON="${PYO3_PYTHON:-$(command -v python3)}"
cargo build --release --locked --bin ravenwatch
bin="$CARGO_TARGET_DIR/release/ravenwatch"
"$bin" validate
"$bin" test
"$bin" enrichment sync
"$bin" run --input samples/ "$@"
