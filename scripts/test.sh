#!/usr/bin/env bash
# The project's one test command (the README's, and what CI runs).
# Installs what the suites need, then: format check, clippy with warnings as errors, all tests.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked
