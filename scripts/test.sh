#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, then unit, integration and doc tests
# against real servers (standalone Redis, a 3-master Redis Cluster, PostgreSQL, MariaDB, and
# dynalite for DynamoDB) and a real browser (headless Debian chromium), which it installs when
# missing; the servers run on free 127.0.0.1 ports and are stopped at the end.
# This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step says how long the run has taken so far (bash's SECONDS), to see where the time goes.
step() { printf '\n==> [%ds] %s\n' "$SECONDS" "$*"; }

step "rustfmt"
cargo fmt --all --check

step "clippy (all targets, all features, warnings are errors)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

# Without features and with all: a link from an item every build has to one behind a feature
# breaks in the first. Each store feature alone is left out: that caught only links between
# stores, and cost ~100 s of a cold run (run the loop with `sqlite redis postgres mysql dynamodb`
# after changing a store's docs).
step "rustdoc: no warning without features, and with all (broken links, private links)"
for features in "" axum; do
  RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps -p cloakroom --no-default-features \
    ${features:+--features "$features"}
done
RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps -p cloakroom --all-features

step "dependency advisories: the library's tree against the RustSec snapshot in audit/"
python3 scripts/audit.py --self-check
python3 scripts/audit.py

step "browser test tools (Debian chromium, playwright-core from the lockfile)"
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "chromium is missing: sudo apt-get install -y chromium" >&2; exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
npm ci --prefix demo/browser --no-audit --no-fund --loglevel=error
npm ci --prefix interop --no-audit --no-fund --loglevel=error
npm ci --prefix scripts/dynalite --no-audit --no-fund --loglevel=error

step "servers"
# shellcheck source=scripts/services.sh
source scripts/services.sh
trap stop_services EXIT
start_services

step "tests (unit, integration, doc)"
cargo test --workspace --all-features

step "done"
