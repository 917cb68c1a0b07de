#!/usr/bin/env bash
# Runs the whole test suite: formatting, clippy, unit and integration tests.
# Installs what it needs on a fresh machine (Rust components, pip in the
# python3 that pyo3 links against).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ravenwatch-target}"
export PYO3_PYTHON="${PYO3_PYTHON:-$(command -v python3)}"

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }
"$PYO3_PYTHON" -c 'import sysconfig, sys; sys.exit(0 if sysconfig.get_config_var("Py_ENABLE_SHARED") else 1)' \
  || { echo "$PYO3_PYTHON has no shared libpython; pyo3 needs one to embed Python"; exit 1; }
"$PYO3_PYTHON" -m pip --version >/dev/null 2>&1 || "$PYO3_PYTHON" -m ensurepip --upgrade
rustup component add rustfmt clippy >/dev/null 2>&1 || true

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
