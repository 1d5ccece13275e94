#!/usr/bin/env bash
# Restore benchmark: `stack-backup restore` against the restic pipeline a
# script would run (restic dump | pg_restore, restic dump | docker load,
# restic restore of the directory), on the same data in the same run.
# See docs/benchmarks.md, "Restore benchmark".
#
#   bash bench/restore.sh           # reuse the stack of bench/backup.sh (run it when missing), run, report
#   bash bench/restore.sh --fresh   # run bench/backup.sh first in any case (wipes SB_BENCH_DIR)
#
# As root on Debian. It sources scripts/services.sh and then:
#   1. reuses the stack bench/backup.sh left in SB_BENCH_DIR (database
#      `sbbench`, images sbbench-{a,b,c}:latest, the files directory, the
#      stack-backup repository and its newest set of tier `backups`); runs
#      bench/backup.sh first (SB_BENCH_DOC=0) when that is missing, was made
#      at other sizes, or with --fresh;
#   2. checks that the live stack is exactly that set (row counts, image IDs,
#      the SHA-256 of every file, read back with stock restic) and records
#      what a restore must bring back;
#   3. backs the same live stack up with bench/restic-backup.sh into a restic
#      repository of its own ($SB_BENCH_DIR/restore/, password in a file; kept
#      for the next run while the set is the same), untimed;
#   4. for each round (2): breaks the stack (see break_stack), reads the
#      contender's repository once (warm cache), restores, checks the result:
#        (b) bench/restic-restore.sh   the restic pipeline
#        (c) stack-backup restore SET --yes   (the whole safety chain)
#      each under /usr/bin/time (wall seconds, peak RSS); round 1 runs (b)
#      first, round 2 (c) first;
#   5. prints a table, writes bench/results/restore-<timestamp>.json and (at
#      full size) the "Restore benchmark" results of docs/benchmarks.md.
#
# Environment (the sizes are bench/backup.sh's):
#   SB_BENCH_DIR    work dir (default /var/tmp/stack-backup-bench)
#   SB_BENCH_SCALE, SB_BENCH_PG_SCALE, SB_BENCH_FILES, SB_BENCH_LAYER_MIB
#                   sizes of the stack (see bench/backup.sh); a stack made at
#                   other sizes is regenerated
#   SB_BIN          stack-backup binary (default: target/release/stack-backup,
#                   built or brought up to date first)
#   SB_BENCH_ROUNDS rounds (default 2)
#   SB_BENCH_RESTORE_SET  the set to restore (default: the newest of tier backups)
#   SB_BENCH_DOC    1 = write docs/benchmarks.md, 0 = don't (default: 1 at
#                   full size only)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
cd "$ROOT"

say() { printf '[restore-bench] %s\n' "$*" >&2; }
die() { printf '[restore-bench] error: %s\n' "$*" >&2; exit 1; }

FRESH=0
case "${1:-}" in
  "") ;;
  --fresh) FRESH=1 ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument $1 (try --help)" ;;
esac
[ "$(id -u)" = 0 ] || die "run as root (it starts services and talks to dockerd)"

BENCH=${SB_BENCH_DIR:-/var/tmp/stack-backup-bench}
case "$BENCH" in
  /*) ;;
  *) die "SB_BENCH_DIR must be an absolute path" ;;
esac
BENCH=${BENCH%/}
[ -n "$BENCH" ] && [ "$BENCH" != / ] || die "SB_BENCH_DIR must not be /"
MARKER="$BENCH/.stack-backup-bench"

# shellcheck source=../scripts/services.sh
source scripts/services.sh
set -euo pipefail

# shellcheck source=common.sh
source bench/common.sh
ensure_gnu_time

# --- settings (the sizes as bench/backup.sh computes them) ------------------
SCALE=${SB_BENCH_SCALE:-1}
awk -v s="$SCALE" 'BEGIN { exit !(s + 0 > 0) }' || die "SB_BENCH_SCALE must be a positive number"
scaled() { # scaled BASE MIN -> round(BASE * SCALE), at least MIN
  awk -v b="$1" -v m="$2" -v s="$SCALE" 'BEGIN { v = int(b * s + 0.5); if (v < m) v = m; print v }'
}
PG_SCALE=${SB_BENCH_PG_SCALE:-$(scaled 20 1)}
FILES_N=${SB_BENCH_FILES:-$(scaled 30000 100)}
LAYER_MIB=${SB_BENCH_LAYER_MIB:-$(scaled 200 4)}
ROUNDS=${SB_BENCH_ROUNDS:-2}
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "SB_BENCH_ROUNDS must be a positive integer"
if [ -z "${SB_BENCH_DOC:-}" ]; then
  if awk -v s="$SCALE" 'BEGIN { exit !(s == 1) }' && [ -z "${SB_BENCH_PG_SCALE:-}${SB_BENCH_FILES:-}${SB_BENCH_LAYER_MIB:-}" ]; then
    SB_BENCH_DOC=1
  else
    SB_BENCH_DOC=0
  fi
fi

DB=sbbench
PG_HOST=127.0.0.1
PG_BASE="postgres://$SB_PG_USER@$PG_HOST:$SB_PG_PORT"
PG_DB_URL="$PG_BASE/$DB"
export PGPASSWORD="$SB_PG_PASSWORD"   # env only, never argv
IMAGES=(sbbench-a:latest sbbench-b:latest sbbench-c:latest)
LARGE_IMAGE=sbbench-large:latest
LABEL=stack-backup-bench
FILES="$BENCH/files"
SB_CONFIG="$BENCH/stack-backup.toml"
SB_REPO="$BENCH/sb-repo"
SB_KEY="$BENCH/sb.key"

ensure_sb_bin || die "building stack-backup failed"
[ -x "$SB_BIN" ] || die "no stack-backup binary at $SB_BIN"

psql_admin() { psql -X -q -v ON_ERROR_STOP=1 -d "$PG_BASE/postgres" "$@"; }
bench_meta() { # bench_meta KEY -> the value bench/backup.sh recorded
  [ -f "$BENCH/meta.tsv" ] && awk -F'\t' -v k="$1" '$1 == k { print $2; exit }' "$BENCH/meta.tsv"
}

# --- 1. the stack: bench/backup.sh's, or a new one ---------------------------
why=""
if [ "$FRESH" = 1 ]; then why="--fresh"
elif [ ! -f "$MARKER" ]; then why="no bench dir at $BENCH"
elif [ ! -f "$SB_CONFIG" ] || [ ! -d "$SB_REPO" ] || [ ! -f "$SB_KEY" ]; then why="no stack-backup repository in $BENCH"
elif [ ! -d "$FILES" ]; then why="no files directory in $BENCH"
elif [ "$(bench_meta pg_scale)" != "$PG_SCALE" ] || [ "$(bench_meta files_count)" != "$FILES_N" ] \
  || [ "$(bench_meta layer_mib)" != "$LAYER_MIB" ]; then
  why="the stack in $BENCH has other sizes (pgbench scale $(bench_meta pg_scale), $(bench_meta files_count) files, $(bench_meta layer_mib) MiB layer)"
fi
GENERATED=0
if [ -n "$why" ]; then
  say "running bench/backup.sh first ($why); its results go to bench/results/, not to the doc"
  SB_BENCH_DOC=0 SB_BIN="$SB_BIN" bash "$HERE/backup.sh" || die "bench/backup.sh failed"
  GENERATED=1
fi
[ -f "$MARKER" ] || die "$BENCH was not made by bench/backup.sh"

RB="$BENCH/restore"              # everything of this script
rm -rf "$RB/logs" "$RB/steps"
mkdir -p "$RB/logs" "$RB/steps"
RESULTS="$RB/results.tsv"
META="$RB/meta.tsv"
printf 'round\tposition\ttool\twall_s\tmax_rss_kib\texit_code\tverified\tnote\n' > "$RESULTS"
: > "$META"
meta() { printf '%s\t%s\n' "$1" "$2" >> "$META"; }

TS=$(date -u +%Y%m%dT%H%M%SZ)
meta timestamp "$TS"
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta scale "$SCALE"
meta rounds "$ROUNDS"
meta stack_generated "$GENERATED"
meta stack_made "$(bench_meta date)"
meta cpu "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
meta nproc "$(nproc)"
meta mem_total_kib "$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
meta kernel "$(uname -r)"
meta os "$(. /etc/os-release && echo "$PRETTY_NAME")"
meta git_commit "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo '+dirty')"
meta restic_version "$(restic version | awk '{ print $2 }')"
meta pg_restore_version "$(pg_restore --version | awk '{ print $3 }')"
meta pg_server_version "$(psql_admin -tAc 'SHOW server_version' | awk '{ print $1 }')"
meta docker_server_version "$(docker version --format '{{.Server.Version}}')"
meta loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"
meta pg_scale "$PG_SCALE"
meta files_count "$(bench_meta files_count)"
meta files_bytes "$(bench_meta files_bytes)"
meta layer_mib "$(bench_meta layer_mib)"
meta small_layer_mib "$(bench_meta small_layer_mib)"
meta sb_bin "$SB_BIN"
meta sb_version "$("$SB_BIN" --version 2>/dev/null | sed 's/^stack-backup //')"
meta sb_bin_built "$(date -u -r "$SB_BIN" '+%Y-%m-%d %H:%M UTC')"
meta sb_profile "$(sb_profile)"
[ "$(sb_profile)" != debug ] || say "warning: $SB_BIN is a debug build; timings of (c) mean little"

# stack-backup gets only what its config says (as in bench/backup.sh).
SB_CMD=(env -u PGPASSWORD -u RESTIC_PASSWORD -u RESTIC_PASSWORD_FILE -u RESTIC_REPOSITORY
  -u RESTIC_CACHE_DIR -u STACK_BACKUP_PASSWORD -u STACK_BACKUP_PASSWORD_FILE
  -u STACK_BACKUP_REPOSITORY -u STACK_BACKUP_CONFIG -u DATABASE_URL -u REDIS_URL
  XDG_CACHE_HOME="$BENCH/sb-cache" "$SB_BIN" --config "$SB_CONFIG" --no-progress)
sb() { "${SB_CMD[@]}" "$@"; }
sb_restic() { restic -r "$SB_REPO" --password-file "$SB_KEY" --no-cache "$@"; }

# --- 2. the set, and what a restore must bring back ---------------------------
sets_json=$(sb --json list --tier backups) || die "stack-backup list failed"
read -r SET SET_ID SET_TIME < <(printf '%s' "$sets_json" | python3 -c '
import json, sys
want = sys.argv[1]
sets = json.load(sys.stdin) or []
if want:
    sets = [s for s in sets if s["name"] == want]
if not sets:
    sys.exit("no backup set" + (f" named {want}" if want else " of tier backups"))
s = max(sets, key=lambda s: s["time"])
print(s["name"], s["id"], s["time"])' "${SB_BENCH_RESTORE_SET:-}") || die "no set to restore in $SB_REPO"
say "set to restore: $SET (${SET_ID:0:8}, taken $SET_TIME)"
meta set_name "$SET"
meta set_id "$SET_ID"
meta set_time "$SET_TIME"
sb_restic dump "$SET_ID" /stack-backup/manifest.json > "$RB/manifest.json" 2>"$RB/logs/set-read.log" \
  || die "stock restic cannot read the set's manifest.json, see $RB/logs/set-read.log"
sb_restic dump "$SET_ID" /stack-backup/CHECKSUM.sha256 > "$RB/CHECKSUM.sha256" 2>>"$RB/logs/set-read.log" \
  || die "stock restic cannot read the set's CHECKSUM.sha256, see $RB/logs/set-read.log"
meta set_tool "$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("tool", "?"))' "$RB/manifest.json")"

say "checking that the live stack is set $SET (every table, image and file)"
if ! python3 "$HERE/restore_check.py" reference --manifest "$RB/manifest.json" \
    --checksums "$RB/CHECKSUM.sha256" --pg-url "$PG_DB_URL" --files-dir "$FILES" \
    --out "$RB/reference.json" > "$RB/logs/reference.log" 2>&1; then
  cat "$RB/logs/reference.log" >&2
  die "the live database, images or files are not set $SET (another SB_BENCH_DIR's run, or an interrupted restore, replaced them): run 'bash bench/restore.sh --fresh'"
fi
say "$(tail -n 1 "$RB/logs/reference.log")"

# --- 3. the same stack in stock restic, for (b) ---------------------------------
RESTIC_REPO="$RB/restic-repo"
RESTIC_KEY="$RB/restic.key"
RESTIC_CACHE="$RB/restic-cache"
RESTIC_ENV=(env -u RESTIC_PASSWORD RESTIC_REPOSITORY="$RESTIC_REPO" RESTIC_PASSWORD_FILE="$RESTIC_KEY"
  RESTIC_CACHE_DIR="$RESTIC_CACHE")
if [ "$(cat "$RB/restic.set" 2>/dev/null)" != "$SET_ID" ] || [ ! -f "$RESTIC_REPO/config" ]; then
  say "backing the same stack up into a restic repository for (b) (untimed)"
  rm -rf "$RESTIC_REPO" "$RESTIC_CACHE" "$RB/restic.set"
  ( umask 077; head -c 24 /dev/urandom | base64 > "$RESTIC_KEY" )
  "${RESTIC_ENV[@]}" restic init --repository-version 2 > "$RB/logs/restic-init.log" 2>&1 \
    || { cat "$RB/logs/restic-init.log" >&2; die "restic init failed"; }
  "${RESTIC_ENV[@]}" bash "$HERE/restic-backup.sh" "$PG_DB_URL" "$FILES" "${IMAGES[@]}" \
    > "$RB/logs/restic-backup.log" 2>&1 \
    || { tail -n 20 "$RB/logs/restic-backup.log" >&2; die "the restic backup for (b) failed"; }
  printf '%s\n' "$SET_ID" > "$RB/restic.set"
else
  say "reusing the restic repository of (b) (made from the same set)"
fi
meta restic_snapshots "$("${RESTIC_ENV[@]}" restic snapshots --json 2>/dev/null | python3 -c 'import json, sys; print(len(json.load(sys.stdin) or []))')"

# --- 4. the rounds ---------------------------------------------------------------
remove_images() {
  local t ids
  for t in "${IMAGES[@]}" "$LARGE_IMAGE"; do
    docker image rm -f "$t" >/dev/null 2>&1 || true
  done
  for _ in 1 2 3; do
    ids=$(docker image ls -q --filter "label=$LABEL=1" | sort -u)
    [ -n "$ids" ] || break
    # shellcheck disable=SC2086
    docker image rm -f $ids >/dev/null 2>&1 || true
  done
}

# The same damage before every restore: a bad migration (a table dropped,
# balances zeroed), the images gone (with the image holding their shared
# layer, so the layer must be loaded again), 1 % of the files changed and
# one directory of 100 files deleted.
break_stack() { # break_stack SEED
  local n bytes gone
  psql_admin -d "$PG_DB_URL" -c "DROP TABLE IF EXISTS pgbench_history" \
    -c "UPDATE pgbench_branches SET bbalance = 0" -c "CHECKPOINT" >/dev/null
  remove_images
  read -r n bytes < <(python3 "$HERE/gen_files.py" change "$FILES" 1 "$1")
  gone=$(find "$FILES/d000/s01" -type f 2>/dev/null | wc -l)
  rm -rf "$FILES/d000/s01"
  sync
  BROKEN="pgbench_history dropped, pgbench_branches balances zeroed; images removed; $n files changed, $gone deleted"
}

warm() { # warm DIR... -- read once, so that no restore pays for a cold cache
  local d
  for d in "$@"; do
    [ -e "$d" ] && find "$d" -type f -exec cat {} + > /dev/null
  done
  return 0
}

leftovers() { # what a restore left beside the live data
  local l
  l=$(psql_admin -tAc "SELECT string_agg(datname, ' ') FROM pg_database WHERE datname LIKE '${DB}\\_\\_sb\\_%'" || true)
  l="$l $(cd "$(dirname "$FILES")" && ls -d "$(basename "$FILES")".* 2>/dev/null | tr '\n' ' ' || true)"
  echo "$l" | xargs
}
clear_leftovers() {
  local d
  for d in $(psql_admin -tAc "SELECT datname FROM pg_database WHERE datname LIKE '${DB}\\_\\_sb\\_%'"); do
    psql_admin -c "DROP DATABASE IF EXISTS \"$d\" WITH (FORCE)"
  done
  rm -rf "$FILES".*
}

LAST_RC=0 LAST_WALL="" LAST_RSS=""
# measure ROUND TOOL CMD... -- runs CMD under /usr/bin/time; meanwhile
# restore_check.py samples which tools run (and, for (c), times its steps).
measure() {
  local round=$1 tool=$2; shift 2
  local tf="$RB/logs/round$round-$tool.time" log="$RB/logs/round$round-$tool.log" rc=0
  local fifo="$RB/steps/round$round-$tool.fifo" spid="" tpid wpid
  say "round $round: ($tool) running"
  if [ "$tool" = c ]; then
    # stack-backup prints each step of its chain; the stamp filter times them.
    rm -f "$fifo"; mkfifo "$fifo"
    python3 "$HERE/restore_check.py" stamp --steps "$RB/steps/round$round-c.tsv" < "$fifo" > "$log" &
    spid=$!
    /usr/bin/time -f '%e %M' -o "$tf" "$@" > "$fifo" 2>&1 &
    tpid=$!
  else
    /usr/bin/time -f '%e %M' -o "$tf" "$@" > "$log" 2>&1 &
    tpid=$!
  fi
  python3 "$HERE/restore_check.py" sample --pid "$tpid" --out "$RB/steps/round$round-$tool.sample.tsv" \
    --memory "$RB/steps/round$round-$tool.memory.tsv" \
    --dir "$FILES.sb-restore" --dir "$FILES.sb-old" --dir "$FILES.restic-restore" --dir "$FILES.restic-old" &
  wpid=$!
  wait "$tpid" || rc=$?
  wait "$wpid" || say "round $round: sampling ($tool) failed"
  if [ -n "$spid" ]; then
    wait "$spid" || say "round $round: timing the steps of (c) failed"
    rm -f "$fifo"
  fi
  read -r LAST_WALL LAST_RSS < <(tail -n 1 "$tf")
  sync
  LAST_RC=$rc
  if [ "$rc" != 0 ]; then
    say "round $round: ($tool) FAILED with exit code $rc after ${LAST_WALL}s; last lines of $log:"
    tail -n 8 "$log" >&2
  else
    say "round $round: ($tool) ${LAST_WALL}s, peak RSS $((LAST_RSS / 1024)) MiB"
  fi
}

run_one() { # run_one ROUND POSITION TOOL
  local round=$1 pos=$2 tool=$3 verified note left pre
  break_stack $((100 * round + pos))
  say "round $round: broke the stack: $BROKEN"
  if [ "$tool" = b ]; then
    warm "$RESTIC_REPO" "$RESTIC_CACHE"
    measure "$round" b "${RESTIC_ENV[@]}" bash "$HERE/restic-restore.sh" "$PG_BASE" "$DB" "$FILES" "${IMAGES[@]}"
  else
    warm "$SB_REPO" "$BENCH/sb-cache" "$SB_BIN"
    measure "$round" c "${SB_CMD[@]}" -v restore "$SET" --yes
  fi
  note=""
  left=$(leftovers)
  if [ -n "$left" ]; then
    note="left behind: $left"
    say "round $round: ($tool) left behind: $left (removed)"
    clear_leftovers
  fi
  if [ "$tool" = c ]; then
    pre=$(grep -o 'kept as set `[^`]*`' "$RB/logs/round$round-c.log" | tr -d '`' | awk '{ print $NF }' || true)
    [ -n "$pre" ] && note="${note:+$note; }pre-restore set $pre"
  fi
  if verified=$(python3 "$HERE/restore_check.py" check --ref "$RB/reference.json" \
      --pg-url "$PG_DB_URL" --files-dir "$FILES" 2>&1); then
    say "round $round: ($tool) restored stack $verified"
  else
    say "round $round: ($tool) the restored stack is NOT the set: $verified"
  fi
  note="${note:+$note; }broken before: $BROKEN"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$pos" "$tool" "$LAST_WALL" "$LAST_RSS" \
    "$LAST_RC" "$(printf '%s' "$verified" | tr '\t\n' '  ')" "$note" >> "$RESULTS"
}

meta sb_repo_bytes_start "$(du -sb "$SB_REPO" | awk '{ print $1 }')"
meta restic_repo_bytes "$(du -sb "$RESTIC_REPO" | awk '{ print $1 }')"
T_START=$(date +%s)
for round in $(seq 1 "$ROUNDS"); do
  say "== round $round"
  if [ $((round % 2)) = 1 ]; then order=(b c); else order=(c b); fi
  run_one "$round" 1 "${order[0]}"
  run_one "$round" 2 "${order[1]}"
done
meta total_seconds "$(( $(date +%s) - T_START ))"
meta loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"
meta sb_repo_bytes_end "$(du -sb "$SB_REPO" | awk '{ print $1 }')"

# --- 5. report -------------------------------------------------------------------
mkdir -p "$HERE/results"
JSON="$HERE/results/restore-$TS.json"
doc_args=()
[ "$SB_BENCH_DOC" = 1 ] && doc_args=(--doc "$ROOT/docs/benchmarks.md")
python3 "$HERE/restore_report.py" --results "$RESULTS" --meta "$META" --manifest "$RB/manifest.json" \
  --steps-dir "$RB/steps" --json "$JSON" "${doc_args[@]}"
say "results: $JSON${doc_args[1]:+ and ${doc_args[1]}}"
say "logs: $RB/logs; the stack stays in $BENCH (the sbbench-large image is gone: restores bring back only the three images)"
