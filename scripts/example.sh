#!/usr/bin/env bash
# Installs Ravenwatch (release build, into ~/.cargo/bin) and runs the example
# project at the repository root on the bundled sample logs.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ravenwatch-target}"
export PYO3_PYTHON="${PYO3_PYTHON:-$(command -v python3)}"
cargo install --locked --force --quiet --path . --bin ravenwatch
bin="$(cargo_home="${CARGO_HOME:-$HOME/.cargo}"; echo "$cargo_home/bin/ravenwatch")"
"$bin" validate
"$bin" test
"$bin" enrichment sync
"$bin" run --input samples/ "$@"
if [ "$(command -v ravenwatch || true)" != "$bin" ]; then
  echo "installed $bin; put $(dirname "$bin") on PATH to run \`ravenwatch\` anywhere" >&2
fi
