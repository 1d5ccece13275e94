#!/usr/bin/env bash
# `status` on a local repository with 1,000 backup sets (issue 15: under
# 1 s, no pack file read; tests/operations.rs checks the reads, this
# measures the time).
#
#   bash bench/status.sh
#
# The repository is made by the ignored test `bench_status_fixture` of
# tests/operations.rs (one real backup, then 1,000 copies of its snapshot
# with other names, tiers and times, written through rustic_core). Then
# `stack-backup --json status` runs SB_BENCH_RUNS times (default 5) and
# the wall time of each, the median and the peak RSS are printed.
#
# Environment:
#   SB_BIN               the binary measured (default: a release build, see
#                        bench/common.sh); the fixture is built by cargo test
#   SB_BENCH_STATUS_SETS number of sets (default 1000)
#   SB_BENCH_RUNS        runs (default 5)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
cd "$ROOT"

say() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

# shellcheck source=bench/common.sh
. "$HERE/common.sh"
ensure_gnu_time
ensure_sb_bin

runs=${SB_BENCH_RUNS:-5}
out=$(mktemp)
say "making the repository (${SB_BENCH_STATUS_SETS:-1000} sets)"
SB_BENCH_STATUS_OUT=$out cargo test --locked -q --test operations bench_status_fixture -- --ignored >&2
dir=$(cat "$out")
rm -f "$out"
trap 'rm -rf "$dir"' EXIT

export STACK_BACKUP_PASSWORD=test-repo-password-1234 HOME="$dir"
# A first run warms the page cache, as a monitoring system's every-minute
# run finds it.
"$SB_BIN" --config "$dir/stack-backup.toml" --json status >/dev/null

times=()
for i in $(seq 1 "$runs"); do
  /usr/bin/time -f '%e %U %S %M' -o "$dir/time" \
    "$SB_BIN" --config "$dir/stack-backup.toml" --json status >"$dir/status.json"
  read -r wall user sys rss <"$dir/time"
  say "run $i: ${wall}s wall, ${user}s user + ${sys}s system CPU, peak RSS ${rss} KiB"
  times+=("$wall")
done
# `list` reads the same snapshot files: the floor status builds on.
/usr/bin/time -f '%e' -o "$dir/time" "$SB_BIN" --config "$dir/stack-backup.toml" --json list >/dev/null
say "list of the same sets: $(cat "$dir/time")s; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
sets=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["sets"]))' "$dir/status.json")
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "status of $sets sets ($(sb_profile) build): median ${median}s over $runs runs"
