#!/usr/bin/env bash
# test.sh: the project's whole check, as CI runs it (.ci/run) and as the README gives it.
#   1. scripts/dev-env.sh: installs and starts what the tests need (dockerd, a second dockerd,
#      qemu binfmt, a registry, sshd); whatever it starts here is stopped on exit.
#   2. cargo fmt --check, clippy with -D warnings, cargo doc with -D warnings.
#   3. the whole test suite, including the end-to-end tests against the real engine.
# The end-to-end tests fail (never skip) when the engine is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=${LKPKG_DEV_STATE:-/var/lib/lkpkg-dev}
mkdir -p "$STATE"
touch "$STATE/started"
before=$(wc -l <"$STATE/started")

stop_started() {
  local pids
  pids=$(tail -n +"$((before + 1))" "$STATE/started" 2>/dev/null || true)
  [ -n "$pids" ] || return 0
  echo "test.sh: stopping what this run started: $(echo $pids)" >&2
  for pid in $pids; do kill "$pid" 2>/dev/null || true; done
  for pid in $pids; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  # Keep only the lines of processes that were running before this run.
  head -n "$before" "$STATE/started" >"$STATE/started.tmp" && mv "$STATE/started.tmp" "$STATE/started"
}
trap stop_started EXIT

bash scripts/dev-env.sh
# shellcheck disable=SC1091
source "$STATE/env"
docker version --format 'engine {{.Server.Version}} (API {{.Server.APIVersion}})' >&2

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
cargo test --workspace
