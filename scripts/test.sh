#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, then unit, integration and doc tests
# against real servers (standalone Redis, a 3-master Redis Cluster, PostgreSQL), which it
# installs when missing, starts on free 127.0.0.1 ports, and stops at the end.
# This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "rustfmt"
cargo fmt --all --check

step "clippy (all targets, all features, warnings are errors)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "servers"
# shellcheck source=scripts/services.sh
source scripts/services.sh
trap stop_services EXIT
start_services

step "tests (unit, integration, doc)"
cargo test --workspace --all-features
