#!/usr/bin/env bash
# Scale benchmark (issue 18): stack-backup against the restic pipeline at ten
# times the bench stack, with the peak RSS of every process. Generated data,
# nothing downloaded. See docs/benchmarks.md, "Scale".
#
#   bash bench/scale.sh           # generate the stack, run, report
#   bash bench/scale.sh --clean   # remove the scale dir, database and images
#
# As root on Debian. It sources scripts/services.sh and then:
#   1. generates a stack at SB_SCALE_FACTOR (1 = the issue's size):
#      database `sbscale` (pgbench -i -s 200, about 3 GB), 300k small files
#      (bench/gen_files.py), five images sbscale-{a..e} sharing layers (all
#      five a 2000 MiB layer, c/d/e also a 200 MiB one, each a 2 MiB layer of
#      its own);
#   2. per round (SB_BENCH_ROUNDS), into new repositories, (b) the restic
#      pipeline (bench/restic-backup.sh, restic-restore.sh, restic check
#      --read-data) and (c) stack-backup, back to back, the order swapped
#      every round:
#        first, unchanged    backups of the same live stack
#        changed             after a day of change (pgbench transactions, one
#                            image gets a new layer, 1 % of the files change)
#        restore             of the changed state onto a broken stack; the
#                            restored stack is compared with the state before
#                            (rows and content hash of every table, image
#                            IDs, every file's SHA-256)
#        verify              restic check --read-data / stack-backup verify --read-data
#        drill               stack-backup drill (against (b)'s restore time)
#      each under bench/scale.py run: wall seconds, and the peak RSS of every
#      process (stack-backup, pg_dump, docker save/load, restic, ...);
#   3. reports medians of the rounds, the per-round ratio c/b, seconds per GB
#      of data and every process's peak; writes bench/results/scale-<ts>.json.
#
# Environment:
#   SB_SCALE_FACTOR   size factor (default 1): pgbench scale 200, 300000 files,
#                     a 2000 MiB shared layer at 1; 0.1 is the bench stack's size
#   SB_BENCH_ROUNDS   rounds (default 3)
#   SB_SCALE_DIR      work dir (default /var/tmp/stack-backup-scale); wiped at start
#   SB_SCALE_BASELINE a scale-*.json of an earlier run (e.g. factor 0.1): the
#                     report adds the ratio of seconds per GB to it
#   SB_SCALE_MIN_FREE GiB the disk keeps free beyond the estimate (default 25)
#   SB_BIN            stack-backup binary (default: a release build, built here)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
cd "$ROOT"

say() { printf '[scale] %s\n' "$*" >&2; }
die() { printf '[scale] error: %s\n' "$*" >&2; exit 1; }

case "${1:-}" in
  ""|--clean) ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument $1 (try --help)" ;;
esac
[ "$(id -u)" = 0 ] || die "run as root (it starts services and talks to dockerd)"

BENCH=${SB_SCALE_DIR:-/var/tmp/stack-backup-scale}
case "$BENCH" in /*) ;; *) die "SB_SCALE_DIR must be an absolute path" ;; esac
BENCH=${BENCH%/}
[ -n "$BENCH" ] && [ "$BENCH" != / ] || die "SB_SCALE_DIR must not be /"
MARKER="$BENCH/.stack-backup-scale"

# shellcheck source=../scripts/services.sh
source scripts/services.sh
set -euo pipefail
# shellcheck source=common.sh
source bench/common.sh
ensure_gnu_time

FACTOR=${SB_SCALE_FACTOR:-1}
awk -v s="$FACTOR" 'BEGIN { exit !(s + 0 > 0) }' || die "SB_SCALE_FACTOR must be a positive number"
scaled() { awk -v b="$1" -v m="$2" -v s="$FACTOR" 'BEGIN { v = int(b * s + 0.5); if (v < m) v = m; print v }'; }
PG_SCALE=$(scaled 200 1)
FILES_N=$(scaled 300000 100)
LAYER_MIB=$(scaled 2000 4)
MID_MIB=$(scaled 200 2)
SMALL_MIB=2
PGBENCH_TX=$(scaled 50000 100)   # per client, 2 clients: the day of change
ROUNDS=${SB_BENCH_ROUNDS:-3}
MIN_FREE_GIB=${SB_SCALE_MIN_FREE:-25}

DB=sbscale
PG_HOST=127.0.0.1
PG_BASE="postgres://$SB_PG_USER@$PG_HOST:$SB_PG_PORT"
PG_DB_URL="$PG_BASE/$DB"
export PGPASSWORD="$SB_PG_PASSWORD"   # env only, never argv
IMAGES=(sbscale-a:latest sbscale-b:latest sbscale-c:latest sbscale-d:latest sbscale-e:latest)
LABEL=stack-backup-scale
FILES="$BENCH/files"

psql_admin() { psql -X -q -v ON_ERROR_STOP=1 -d "$PG_BASE/postgres" "$@"; }

remove_images() {
  local ids
  for _ in 1 2 3; do
    ids=$( { docker image ls -q --filter "label=$LABEL=1"; docker image ls -q 'sbscale-*'; } | sort -u)
    [ -n "$ids" ] || break
    # shellcheck disable=SC2086
    docker image rm -f $ids >/dev/null 2>&1 || true
  done
}

clean_all() {
  say "removing database $DB, images sbscale-*, $BENCH"
  PGOPTIONS='-c client_min_messages=warning' psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
  remove_images
  if [ -e "$BENCH" ]; then
    [ -f "$MARKER" ] || [ -z "$(ls -A "$BENCH")" ] \
      || die "$BENCH exists and was not made by this script; remove it or set SB_SCALE_DIR"
    rm -rf "$BENCH"
  fi
}

if [ "${1:-}" = --clean ]; then
  clean_all
  exit 0
fi

# The disk: the stack, two repositories and a restore's copy beside the
# live data come to about five times the data (~7.5 GB at factor 1).
need_gib=$(awk -v s="$FACTOR" 'BEGIN { printf "%d", s * 7.5 * 5 + 0.999 }')
clean_all
free_gib=$(df -P --block-size=1G "$(dirname "$BENCH")" | awk 'NR == 2 { print $4 }')
[ "$free_gib" -ge $((need_gib + MIN_FREE_GIB)) ] \
  || die "factor $FACTOR needs about $need_gib GiB and $MIN_FREE_GIB GiB must stay free; $free_gib GiB are"
ensure_sb_bin || die "building stack-backup failed"
[ -x "$SB_BIN" ] || die "no stack-backup binary at $SB_BIN"
export SB_BIN_NAME=${SB_BIN##*/}   # scale.py labels it stack-backup
[ "$(sb_profile)" != debug ] || say "warning: $SB_BIN is a debug build; its timings mean little"
find_pgbench || die "pgbench not found under /usr/lib/postgresql/*/bin"
pgbench_() { "$PGBENCH" -h "$PG_HOST" -p "$SB_PG_PORT" -U "$SB_PG_USER" "$@"; }

mkdir -p "$BENCH"/{logs,runs,images}
touch "$MARKER"
RESULTS="$BENCH/results.tsv" META="$BENCH/meta.tsv"
printf 'round\tscenario\ttool\tdata_bytes\trun_json\tnote\n' > "$RESULTS"
: > "$META"
meta() { printf '%s\t%s\n' "$1" "$2" >> "$META"; }
TS=$(date -u +%Y%m%dT%H%M%SZ)
meta timestamp "$TS"
meta factor "$FACTOR"
meta rounds "$ROUNDS"
meta nproc "$(nproc)"
meta cpu "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
meta git_commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo '+dirty')"
meta sb_bin "$SB_BIN"
meta sb_profile "$(sb_profile)"
meta restic_version "$(restic version | awk '{ print $2 }')"
meta loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"
T_START=$(date +%s)

# --- 1. the stack --------------------------------------------------------------
docker image inspect "$SB_TEST_BASE_IMAGE" >/dev/null 2>&1 \
  || die "base image $SB_TEST_BASE_IMAGE is missing (scripts/services.sh imports it)"
say "factor $FACTOR: database $DB, pgbench -i -s $PG_SCALE"
psql_admin -c "CREATE DATABASE $DB"
pgbench_ -i -q -s "$PG_SCALE" "$DB" > "$BENCH/logs/pgbench-init.log" 2>&1 \
  || { cat "$BENCH/logs/pgbench-init.log" >&2; die "pgbench -i failed"; }
psql_admin -d "$PG_DB_URL" -c "VACUUM ANALYZE" >/dev/null

build_image() { # build_image TAG CONTEXT
  docker build -q -t "$1" "$2" >> "$BENCH/logs/docker-build.log" 2>&1 \
    || { tail -20 "$BENCH/logs/docker-build.log" >&2; die "docker build $1 failed"; }
}
layer_context() { # layer_context DIR FROM MIB: a Dockerfile adding MIB random MiB
  mkdir -p "$1/data"
  head -c $(($3 * 1024 * 1024)) /dev/urandom > "$1/data/$(basename "$1").bin"
  printf 'FROM %s\nLABEL %s=1\nCOPY data /data/\n' "$2" "$LABEL" > "$1/Dockerfile"
}
small_context() { # small_context DIR FROM NAME GENERATION
  mkdir -p "$1/app"
  head -c $((SMALL_MIB * 1024 * 1024)) /dev/urandom > "$1/app/small.bin"
  printf 'image %s generation %s\n' "$3" "$4" > "$1/app/VERSION"
  seq 1 5000 | sed "s/^/$3 setting /" > "$1/app/settings.txt"
  printf 'FROM %s\nCOPY app /app\nCMD ["/bin/cat", "/app/VERSION"]\n' "$2" > "$1/Dockerfile"
}
say "images: a $LAYER_MIB MiB layer under all five, $MID_MIB MiB more under c/d/e, $SMALL_MIB MiB each"
layer_context "$BENCH/images/base" "$SB_TEST_BASE_IMAGE" "$LAYER_MIB"
build_image sbscale-base:build "$BENCH/images/base"
layer_context "$BENCH/images/mid" sbscale-base:build "$MID_MIB"
build_image sbscale-mid:build "$BENCH/images/mid"
rm -rf "$BENCH/images/base" "$BENCH/images/mid"
for img in "${IMAGES[@]}"; do
  n=${img%%:*}; n=${n#sbscale-}
  case $n in a|b) from=sbscale-base:build ;; *) from=sbscale-mid:build ;; esac
  small_context "$BENCH/images/$n" "$from" "$n" 1
  build_image "$img" "$BENCH/images/$n"
done
# Only the five tags hold the layers: a restore that loads them writes them.
docker image rm sbscale-base:build sbscale-mid:build >/dev/null

say "files: $FILES_N small files"
read -r n bytes < <(python3 "$HERE/gen_files.py" create "$FILES" "$FILES_N")
meta pg_scale "$PG_SCALE"
meta files_count "$n"
meta files_bytes "$bytes"
meta layer_mib "$LAYER_MIB"
meta mid_layer_mib "$MID_MIB"
meta images "${#IMAGES[@]}"
meta db_bytes "$(psql_admin -tAc "SELECT pg_database_size('$DB')")"
meta stack_seconds "$(( $(date +%s) - T_START ))"
sync

# An unchanged database is recognised by its WAL insert position among
# other things (decision 0048). The load's tail (its spread checkpoints
# and whatever else writes WAL after it) moves that position for minutes; a
# checkpoint record landing between "first" and "unchanged" made the
# unchanged backup dump the 3 GB again. So the rounds start on a settled
# cluster: the position still for 30 s, then a checkpoint, so that no
# timed one has anything left to write during the rounds.
settle_db() {
  local last="" now still=0 waited=0
  while [ "$still" -lt 30 ]; do
    now=$(psql_admin -tAc "SELECT pg_current_wal_insert_lsn()")
    if [ "$now" = "$last" ]; then still=$((still + 5)); else still=0; last=$now; fi
    [ "$waited" -lt 600 ] || { say "warning: the WAL position still moves after 10 min; going on"; break; }
    sleep 5; waited=$((waited + 5))
  done
  psql_admin -c "CHECKPOINT" >/dev/null
  meta settle_seconds "$waited"
}
say "waiting for the database to settle (WAL position still for 30 s)"
settle_db

# --- the contenders ---------------------------------------------------------------
RESTIC_REPO="$BENCH/restic-repo"
RESTIC_CACHE="$BENCH/restic-cache"
( umask 077
  head -c 24 /dev/urandom | base64 > "$BENCH/restic.key" )
RESTIC_ENV=(env RESTIC_REPOSITORY="$RESTIC_REPO" RESTIC_PASSWORD_FILE="$BENCH/restic.key"
  RESTIC_CACHE_DIR="$RESTIC_CACHE")

SB_CONFIG="$BENCH/stack-backup.toml"
SB_REPO="$BENCH/sb-repo"
write_bench_config "$SB_CONFIG" scale "$FILES"
# stack-backup gets only what its config says.
sb_command_for "$SB_CONFIG"

new_repos() {
  rm -rf "$RESTIC_REPO" "$RESTIC_CACHE" "$SB_REPO" "$BENCH/sb-cache"
  "${RESTIC_ENV[@]}" restic init --repository-version 2 > "$BENCH/logs/restic-init.log" 2>&1 \
    || { cat "$BENCH/logs/restic-init.log" >&2; die "restic init failed"; }
  "${SB_CMD[@]}" init > "$BENCH/logs/sb-init.log" 2>&1 \
    || { cat "$BENCH/logs/sb-init.log" >&2; die "stack-backup init failed"; }
}

# The data a round works on: the dump stream, the images' unique bytes (one
# `docker save` of all five writes each layer once) and the tar of the
# directory. Reading them is also the warm-up: no contender pays for a cold
# cache the one before it warmed.
DATA_BYTES=0
measure_data() { # measure_data ROUND
  local d i t
  d=$(pg_dump -Fc -Z0 -d "$PG_DB_URL" | wc -c)
  i=$(docker save "${IMAGES[@]}" | wc -c)
  t=$(tar -C "$FILES" -c . | wc -c)
  DATA_BYTES=$((d + i + t))
  meta "round$1.dump_bytes" "$d"
  meta "round$1.images_unique_bytes" "$i"
  meta "round$1.tar_bytes" "$t"
  meta "data_bytes_round$1" "$DATA_BYTES"
  sync
}

# timed ROUND SCENARIO TOOL CMD... -- one measured run and its row.
timed() {
  local round=$1 scen=$2 tool=$3 rc=0; shift 3
  local out="$BENCH/runs/$round-$scen-$tool.json" log="$BENCH/logs/$round-$scen-$tool.log"
  say "round $round: $scen ($tool)"
  python3 "$HERE/scale.py" run --out "$out" -- "$@" > "$log" 2>&1 || rc=$?
  sync
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$scen" "$tool" "$DATA_BYTES" "$out" "${NOTE:-}" >> "$RESULTS"
  NOTE=""
  python3 -c 'import json, sys; r = json.load(open(sys.argv[1]))
print("%.1f s, peak RSS %s" % (r["wall_s"], ", ".join("%s %d MiB" % (k, v["peak_kib"] // 1024) for k, v in r["procs"].items())))' "$out" \
    | sed "s/^/[scale]   /" >&2
  if [ "$rc" != 0 ]; then
    say "round $round: $scen ($tool) FAILED with exit code $rc; last lines of $log:"
    tail -n 8 "$log" >&2
  fi
  return 0
}

backup_pair() { # backup_pair ROUND SCENARIO ORDER...
  local round=$1 scen=$2 tool; shift 2
  for tool in "$@"; do
    case $tool in
      b) timed "$round" "$scen" b "${RESTIC_ENV[@]}" bash "$HERE/restic-backup.sh" "$PG_DB_URL" "$FILES" "${IMAGES[@]}" ;;
      c) timed "$round" "$scen" c "${SB_CMD[@]}" backup --name "$scen-$round" ;;
    esac
  done
}

day_of_change() { # day_of_change ROUND
  local n bytes ctx
  say "round $1: a day of change"
  pgbench_ -c 2 -j 2 -t "$PGBENCH_TX" "$DB" > "$BENCH/logs/pgbench-run.log" 2>&1 \
    || { cat "$BENCH/logs/pgbench-run.log" >&2; die "pgbench run failed"; }
  # One image gets a new top layer under the same tag.
  ctx="$BENCH/images/b-$1"
  small_context "$ctx" "${IMAGES[1]}" b "$((1 + $1))"
  build_image "${IMAGES[1]}" "$ctx"
  rm -rf "$ctx"
  read -r n bytes < <(python3 "$HERE/gen_files.py" change "$FILES" 1 "$1")
  meta "round$1.files_changed" "$n"
  psql_admin -d "$PG_DB_URL" -c "CHECKPOINT" >/dev/null
  sync
}

break_stack() { # break_stack SEED
  psql_admin -d "$PG_DB_URL" -c "DROP TABLE IF EXISTS pgbench_history" \
    -c "UPDATE pgbench_branches SET bbalance = 0" -c "CHECKPOINT" >/dev/null
  remove_images
  python3 "$HERE/gen_files.py" change "$FILES" 1 "$1" >/dev/null
  rm -rf "$FILES/d000/s01"
  sync
}

check_restored() { # check_restored ROUND TOOL
  local verdict
  if verdict=$(python3 "$HERE/scale.py" same --ref "$BENCH/state.json" --pg-url "$PG_DB_URL" \
      --files-dir "$FILES" "${IMAGES[@]}" 2>&1); then
    say "round $1: ($2) restored stack: $verdict"
  else
    say "round $1: ($2) the restored stack is NOT the state before: $verdict"
    die "restore ($2) of round $1 did not bring the stack back"
  fi
}

restore_one() { # restore_one ROUND TOOL SEED
  local round=$1 tool=$2
  break_stack "$3"
  case $tool in
    b) timed "$round" restore b "${RESTIC_ENV[@]}" bash "$HERE/restic-restore.sh" "$PG_BASE" "$DB" "$FILES" "${IMAGES[@]}" ;;
    c) timed "$round" restore c "${SB_CMD[@]}" restore "changed-$round" --yes ;;
  esac
  check_restored "$round" "$tool"
  # A restore keeps what it replaced only until it is done; anything left
  # beside the live data would skew the next run.
  for d in $(psql_admin -tAc "SELECT datname FROM pg_database WHERE datname LIKE '${DB}\\_\\_sb\\_%'"); do
    psql_admin -c "DROP DATABASE IF EXISTS \"$d\" WITH (FORCE)"
  done
  rm -rf "$FILES".*
}

for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order=(b c); else order=(c b); fi
  say "== round $round (order ${order[*]})"
  new_repos
  measure_data "$round"
  backup_pair "$round" first "${order[@]}"
  measure_data "$round"
  backup_pair "$round" unchanged "${order[@]}"
  day_of_change "$round"
  measure_data "$round"
  backup_pair "$round" changed "${order[@]}"
  python3 "$HERE/scale.py" state --pg-url "$PG_DB_URL" --files-dir "$FILES" --out "$BENCH/state.json" "${IMAGES[@]}"
  restore_one "$round" "${order[0]}" $((100 * round + 1))
  restore_one "$round" "${order[1]}" $((100 * round + 2))
  for tool in "${order[@]}"; do
    case $tool in
      b) timed "$round" verify b "${RESTIC_ENV[@]}" restic check --read-data ;;
      c) timed "$round" verify c "${SB_CMD[@]}" verify --read-data "changed-$round" ;;
    esac
  done
  NOTE="against (b) restore"
  timed "$round" drill c "${SB_CMD[@]}" --json drill "changed-$round"
  grep -q '"ok": *true' "$BENCH/logs/$round-drill-c.log" \
    || say "round $round: the drill did not pass (see $BENCH/logs/$round-drill-c.log)"
  # The drill's ratio is against the restic pipeline's restore of the round.
  grep -P "^$round\trestore\tb\t" "$RESULTS" | sed 's/\trestore\t/\tdrill\t/' >> "$RESULTS"
done
meta total_seconds "$(( $(date +%s) - T_START ))"
meta loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"

mkdir -p "$HERE/results"
JSON="$HERE/results/scale-$TS.json"
base_args=()
[ -n "${SB_SCALE_BASELINE:-}" ] && base_args=(--baseline "$SB_SCALE_BASELINE")
python3 "$HERE/scale.py" report --results "$RESULTS" --meta "$META" --json "$JSON" "${base_args[@]}"
say "results: $JSON; logs in $BENCH/logs; 'bash bench/scale.sh --clean' removes the stack"
