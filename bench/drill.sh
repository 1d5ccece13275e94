#!/usr/bin/env bash
# Drill benchmark: `stack-backup drill SET` against `stack-backup restore SET
# --yes` of the same set, on the stack bench/backup.sh left, in one run.
# See docs/benchmarks.md, "Drill benchmark".
#
#   bash bench/drill.sh
#
# As root on Debian. It sources scripts/services.sh and then:
#   1. needs the stack of bench/backup.sh in SB_BENCH_DIR (run it first:
#      `SB_BENCH_DOC=0 bash bench/backup.sh`) and picks its newest set of
#      tier `backups` (or SB_BENCH_DRILL_SET);
#   2. for each round (SB_BENCH_ROUNDS, default 3), alternating which runs
#      first:
#        (r) stack-backup restore SET --yes   the whole safety chain, onto a
#            live stack that already holds the set (nothing to repair: the
#            restore does all its work anyway)
#        (d) stack-backup drill SET          scratch database, image checks
#            (the images are present: compared by ID), files into scratch
#      each under /usr/bin/time (wall seconds, peak RSS of the largest
#      process; stack-backup's own peak is what the target is about);
#   3. checks that every drill passed and left no scratch database behind;
#   4. prints a Markdown table (median of the rounds, d/r) and writes
#      bench/results/drill-<timestamp>.json.
#
# Environment:
#   SB_BENCH_DIR     work dir of bench/backup.sh (default /var/tmp/stack-backup-bench)
#   SB_BIN           stack-backup binary (default: target/release/stack-backup,
#                    built or brought up to date first)
#   SB_BENCH_ROUNDS  rounds (default 3)
#   SB_BENCH_DRILL_SET  the set (default: the newest of tier backups)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
cd "$ROOT"

say() { printf '[drill-bench] %s\n' "$*" >&2; }
die() { printf '[drill-bench] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it starts services and talks to dockerd)"
BENCH=${SB_BENCH_DIR:-/var/tmp/stack-backup-bench}
BENCH=${BENCH%/}
[ -f "$BENCH/.stack-backup-bench" ] && [ -f "$BENCH/stack-backup.toml" ] \
  || die "no bench stack in $BENCH: run SB_BENCH_DOC=0 bash bench/backup.sh first"
ROUNDS=${SB_BENCH_ROUNDS:-3}

# shellcheck source=../scripts/services.sh
source scripts/services.sh
set -euo pipefail
# shellcheck source=common.sh
source bench/common.sh
ensure_gnu_time
ensure_sb_bin || die "building stack-backup failed"
[ -x "$SB_BIN" ] || die "no stack-backup binary at $SB_BIN"

SB_CMD=(env -u PGPASSWORD -u RESTIC_PASSWORD -u STACK_BACKUP_PASSWORD
  -u STACK_BACKUP_CONFIG -u DATABASE_URL -u REDIS_URL
  XDG_CACHE_HOME="$BENCH/sb-cache" "$SB_BIN" --config "$BENCH/stack-backup.toml" --no-progress)
sb() { "${SB_CMD[@]}" "$@"; }

SET=${SB_BENCH_DRILL_SET:-$(sb --json list --tier backups | python3 -c '
import json, sys
sets = json.load(sys.stdin)
print(max(sets, key=lambda s: s["time"])["name"] if sets else "")')}
[ -n "$SET" ] || die "no set of tier backups in the bench repository"
say "set $SET, $ROUNDS round(s), binary $SB_BIN ($(sb_profile))"

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
TS=$(date -u +%Y%m%dT%H%M%SZ)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# timed NAME ROUND CMD... -> appends "NAME ROUND seconds peak_kib exit" to $OUT/runs
timed() {
  local name=$1 round=$2; shift 2
  local code=0
  /usr/bin/time -f '%e %M' -o "$OUT/time" "$@" >"$OUT/$name-$round.out" 2>"$OUT/$name-$round.err" || code=$?
  printf '%s %s %s %s\n' "$name" "$round" "$(cat "$OUT/time" | tail -1)" "$code" >>"$OUT/runs"
  [ "$code" = 0 ] || { tail -20 "$OUT/$name-$round.err" >&2; die "$name (round $round) exited $code"; }
}

for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="restore drill"; else order="drill restore"; fi
  for what in $order; do
    say "round $r: $what"
    case $what in
      restore) timed restore "$r" "${SB_CMD[@]}" restore "$SET" --yes ;;
      drill) timed drill "$r" "${SB_CMD[@]}" --json drill "$SET" ;;
    esac
  done
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["ok"], r' "$OUT/drill-$r.out" \
    || die "the drill of round $r did not pass"
done
left=$(PGPASSWORD="$SB_PG_PASSWORD" psql -X -At -d "postgres://$SB_PG_USER@127.0.0.1:$SB_PG_PORT/postgres" \
  -c "SELECT count(*) FROM pg_database WHERE datname LIKE 'sbdrill\_%'")
[ "$left" = 0 ] || say "warning: $left scratch database(s) left on the server"

mkdir -p bench/results
python3 - "$OUT/runs" "bench/results/drill-$TS.json" "$SET" "$SB_BIN" "$(sb_profile)" "$LOAD_START" "$(cut -d' ' -f1-3 /proc/loadavg)" "$OUT" <<'EOF'
import json, statistics, sys
runs_file, out, set_name, sb_bin, profile, load0, load1, outdir = sys.argv[1:]
runs = [l.split() for l in open(runs_file)]
by = {}
for name, rnd, secs, kib, code in runs:
    by.setdefault(name, []).append((int(rnd), float(secs), int(kib)))
med = {n: statistics.median(s for _, s, _ in v) for n, v in by.items()}
peak = {n: max(k for _, _, k in v) for n, v in by.items()}
rto = [json.load(open(f"{outdir}/drill-{r}.out"))["rto_seconds"] for r, _, _ in by["drill"]]
ratio = med["drill"] / med["restore"]
print(f"| round | restore | drill | d/r | restore peak RSS | drill peak RSS |")
print(f"| --- | ---: | ---: | ---: | ---: | ---: |")
for (r, rs, rk), (_, ds, dk) in zip(sorted(by["restore"]), sorted(by["drill"])):
    print(f"| {r} | {rs:.1f} s | {ds:.1f} s | {ds / rs:.2f} | {rk / 1024:.0f} MiB | {dk / 1024:.0f} MiB |")
print(f"| median | {med['restore']:.1f} s | {med['drill']:.1f} s | {ratio:.2f} (target ≤ 1.20: {'met' if ratio <= 1.2 else 'NOT met'}) | {peak['restore'] / 1024:.0f} MiB | {peak['drill'] / 1024:.0f} MiB (target ≤ 300: {'met' if peak['drill'] / 1024 <= 300 else 'NOT met'}) |")
print(f"\nset `{set_name}`; the drills' own RTO: {', '.join(f'{x:.1f} s' for x in rto)}; load average {load0} → {load1}; {sb_bin} ({profile})")
json.dump({"set": set_name, "sb_bin": sb_bin, "profile": profile, "runs": runs,
           "median_seconds": med, "peak_kib": peak, "ratio": ratio, "drill_rto_seconds": rto,
           "load_start": load0, "load_end": load1}, open(out, "w"), indent=2)
EOF
say "results in bench/results/drill-$TS.json"
