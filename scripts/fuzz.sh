#!/usr/bin/env bash
# Runs each cargo-fuzz (libFuzzer) target in fuzz/ for a bounded time and prints, per target, the
# executions, speed, coverage and crashes. Exits non-zero if any target found a crash (the input
# is then under fuzz/artifacts/<target>/; copy it to fuzz/regressions/<target>/ so the stable
# test `cloakroom/tests/fuzz_regressions.rs` replays it forever).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      (defaults: FUZZ_SECONDS or 120, every target)
#
# Builds with nightly (`cargo +nightly`), or with stable and RUSTC_BOOTSTRAP=1 when no nightly is
# installed; installs cargo-fuzz when missing. Seeds are read from fuzz/corpus/ and never
# written: inputs libFuzzer adds go to fuzz/scratch/<target>/ (gitignored), as do the logs.
# Builds go to fuzz/target (apart from the main target/) unless CARGO_TARGET_DIR is set.
# FUZZ_JOBS (default 1) caps the build's parallelism; FUZZ_SANITIZER (default address) picks the
# sanitizer (`none` runs faster).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-${FUZZ_SECONDS:-120}}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(cookie_header signature record layer record_shapes many_cookies)
fi
jobs="${FUZZ_JOBS:-1}"
sanitizer="${FUZZ_SANITIZER:-address}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

step() { printf '\n==> %s\n' "$*"; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  step "installing cargo-fuzz"
  cargo install cargo-fuzz --locked -j "$jobs"
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
  toolchain=$(rustc +nightly --version)
else
  echo "no nightly toolchain: using stable with RUSTC_BOOTSTRAP=1" >&2
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
  toolchain="$(rustc --version) with RUSTC_BOOTSTRAP=1"
fi
options=(--sanitizer "$sanitizer" --debug-assertions)
export CARGO_BUILD_JOBS="$jobs"

step "building ${targets[*]} ($toolchain, sanitizer $sanitizer)"
for target in "${targets[@]}"; do
  "${fuzz[@]}" build "${options[@]}" "$target"
done

step "fuzzing each target for ${seconds}s on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(date -u '+%Y-%m-%d %H:%M UTC')"
# Every cookie target also reads the other cookie seeds: they are all Cookie-header shaped.
cookie_seeds=(corpus/cookie_header corpus/layer corpus/signature)
failed=()
printf '%-14s %12s %8s %8s %8s %8s  %s\n' target runs exec/s cov ft corpus result
for target in "${targets[@]}"; do
  scratch="scratch/$target"
  log="scratch/$target.log"
  mkdir -p "$scratch" "artifacts/$target"
  case "$target" in
    record) seeds=(corpus/record) ;;
    # Their inputs are programs for fuzz_targets/builders.rs, not text.
    record_shapes | many_cookies) seeds=("corpus/$target") ;;
    *) seeds=("${cookie_seeds[@]}") ;;
  esac
  status=0
  # The scratch directory comes first, so it is the one libFuzzer writes new inputs to.
  "${fuzz[@]}" run "${options[@]}" "$target" "$scratch" "${seeds[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -n1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  if [ "$status" -eq 0 ]; then
    result="no crash"
  else
    artifact=$(sed -n 's/.*Test unit written to \(.*\)/\1/p' "$log" | tail -n1)
    result="FAILED (exit $status): ${artifact:-see fuzz/$log}"
    failed+=("$target")
  fi
  printf '%-14s %12s %8s %8s %8s %8s  %s\n' "$target" "${runs:--}" "${speed:--}" \
    "${cov:--}" "${ft:--}" "${corp:--}" "$result"
done

if [ ${#failed[@]} -gt 0 ]; then
  echo >&2
  echo "crashes in: ${failed[*]}; logs in fuzz/scratch/<target>.log, inputs in fuzz/artifacts/<target>/" >&2
  echo "add each input to fuzz/regressions/<target>/ and fix the bug" >&2
  exit 1
fi
