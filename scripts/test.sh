#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, then unit, integration and doc tests.
# This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "rustfmt"
cargo fmt --all --check

step "clippy (all targets, all features, warnings are errors)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "tests (unit, integration, doc)"
cargo test --workspace --all-features
