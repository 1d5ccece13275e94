#!/usr/bin/env bash
# Many kill -9 trials of a restore (random delays over its duration), each
# followed by `restore --abort` or `--resume` (alternating) and a check of
# the end state and of what is left. Prints the figures docs/reliability.md
# quotes. Usage: scripts/crash-trials.sh [TRIALS] (default 200).
# Needs the services of scripts/services.sh (sourced here).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
trials="${1:-200}"
CRASH_TRIALS="$trials" cargo test --locked --test crash random -- --nocapture 2>&1 \
  | grep -E "CRASH-TRIALS|test result|panicked|FAILED"
