#!/usr/bin/env bash
# Backup benchmark: stack-backup against the scripted ways people do this
# today, on the same live stack in the same run. See docs/benchmarks.md.
#
#   bash bench/backup.sh           # generate the stack, run, report
#   bash bench/backup.sh --clean   # remove the bench dir, database and images
#
# As root on Debian. It sources scripts/services.sh (PostgreSQL, Redis,
# Docker Engine, restic, a local base image) and then:
#   1. generates a stack: database `sbbench` (pgbench -i -s 20), three images
#      sharing one large layer (built FROM $SB_TEST_BASE_IMAGE, no registry),
#      a directory of ~30k small files;
#   2. for each scenario -- first backup, unchanged second backup, backup
#      after a day of change -- runs back to back on the same live state:
#        (a) bench/plain-backup.sh   pg_dump|gzip, docker save|gzip, tar|gzip, sha256sum
#        (b) bench/restic-backup.sh  the same streams into stock restic
#        (c) stack-backup backup
#      each under /usr/bin/time (wall seconds, peak RSS);
#   3. prints a table, writes bench/results/backup-<timestamp>.json and (at
#      full size) the results section of docs/benchmarks.md.
#
# Environment:
#   SB_BENCH_DIR    work dir (default /var/tmp/stack-backup-bench); wiped at start
#   SB_BENCH_SCALE  size factor (default 1): pgbench scale 20, 30000 files and a
#                   200 MiB shared layer at 1; e.g. 0.05 for a quick try
#   SB_BENCH_PG_SCALE, SB_BENCH_FILES, SB_BENCH_LAYER_MIB, SB_BENCH_PGBENCH_TX
#                   override one size each (PGBENCH_TX: transactions per client,
#                   2 clients, for the day of change)
#   SB_BIN          stack-backup binary (default: target/release/stack-backup,
#                   built or brought up to date first)
#   SB_BENCH_DOC    1 = write docs/benchmarks.md, 0 = don't (default: 1 at
#                   full size only)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
cd "$ROOT"

say() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

case "${1:-}" in
  ""|--clean) ;;
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

# --- settings --------------------------------------------------------------
SCALE=${SB_BENCH_SCALE:-1}
awk -v s="$SCALE" 'BEGIN { exit !(s + 0 > 0) }' || die "SB_BENCH_SCALE must be a positive number"
scaled() { # scaled BASE MIN -> round(BASE * SCALE), at least MIN
  awk -v b="$1" -v m="$2" -v s="$SCALE" 'BEGIN { v = int(b * s + 0.5); if (v < m) v = m; print v }'
}
PG_SCALE=${SB_BENCH_PG_SCALE:-$(scaled 20 1)}
FILES_N=${SB_BENCH_FILES:-$(scaled 30000 100)}
LAYER_MIB=${SB_BENCH_LAYER_MIB:-$(scaled 200 4)}
SMALL_MIB=2
PGBENCH_CLIENTS=2
PGBENCH_TX=${SB_BENCH_PGBENCH_TX:-$(scaled 5000 100)}
CHANGE_PERCENT=1
if [ -z "${SB_BENCH_DOC:-}" ]; then
  if awk -v s="$SCALE" 'BEGIN { exit !(s == 1) }' && [ -z "${SB_BENCH_PG_SCALE:-}${SB_BENCH_FILES:-}${SB_BENCH_LAYER_MIB:-}${SB_BENCH_PGBENCH_TX:-}" ]; then
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

ensure_sb_bin || die "building stack-backup failed"

psql_admin() { psql -X -q -v ON_ERROR_STOP=1 -d "$PG_BASE/postgres" "$@"; }

# --- clean-up ----------------------------------------------------------------
remove_images() {
  local t ids
  for t in "${IMAGES[@]}" "$LARGE_IMAGE"; do
    docker image rm -f "$t" >/dev/null 2>&1 || true
  done
  # Anything else built by an earlier run (an image replaced by a rebuild).
  for _ in 1 2 3; do
    ids=$(docker image ls -q --filter "label=$LABEL=1" | sort -u)
    [ -n "$ids" ] || break
    # shellcheck disable=SC2086
    docker image rm -f $ids >/dev/null 2>&1 || true
  done
}

clean_all() {
  say "removing database $DB, images sbbench-*, $BENCH"
  PGOPTIONS='-c client_min_messages=warning' psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
  remove_images
  if [ -e "$BENCH" ]; then
    if [ -f "$MARKER" ] || [ -z "$(ls -A "$BENCH")" ]; then
      rm -rf "$BENCH"
    else
      die "$BENCH exists and was not made by this script (no $(basename "$MARKER")); remove it or set SB_BENCH_DIR"
    fi
  fi
}

if [ "${1:-}" = --clean ]; then
  clean_all
  exit 0
fi

clean_all
mkdir -p "$BENCH"/{logs,images,out-a}
touch "$MARKER"
RESULTS="$BENCH/results.tsv"
META="$BENCH/meta.tsv"
printf 'scenario\ttool\trun\twall_s\tmax_rss_kib\texit_code\tsize_run_bytes\tsize_total_bytes\tnote\n' > "$RESULTS"
: > "$META"
meta() { printf '%s\t%s\n' "$1" "$2" >> "$META"; }

TS=$(date -u +%Y%m%dT%H%M%SZ)
meta timestamp "$TS"
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta scale "$SCALE"
meta cpu "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
meta nproc "$(nproc)"
meta mem_total_kib "$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
meta kernel "$(uname -r)"
meta os "$(. /etc/os-release && echo "$PRETTY_NAME")"
meta git_commit "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo '+dirty')"
meta restic_version "$(restic version | awk '{ print $2 }')"
meta pg_dump_version "$(pg_dump --version | awk '{ print $3 }')"
meta pg_server_version "$(psql_admin -tAc 'SHOW server_version' | awk '{ print $1 }')"
meta docker_server_version "$(docker version --format '{{.Server.Version}}')"
meta loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"
meta gzip_version "$(gzip --version | awk 'NR == 1 { print $NF }')"

find_pgbench || die "pgbench not found under /usr/lib/postgresql/*/bin"
pgbench_() { "$PGBENCH" -h "$PG_HOST" -p "$SB_PG_PORT" -U "$SB_PG_USER" "$@"; }

# --- the stack -----------------------------------------------------------------
docker image inspect "$SB_TEST_BASE_IMAGE" >/dev/null 2>&1 \
  || die "base image $SB_TEST_BASE_IMAGE is missing (scripts/services.sh imports it)"

say "database $DB: pgbench -i -s $PG_SCALE"
psql_admin -c "CREATE DATABASE $DB"
pgbench_ -i -q -s "$PG_SCALE" "$DB" > "$BENCH/logs/pgbench-init.log" 2>&1 \
  || { cat "$BENCH/logs/pgbench-init.log" >&2; die "pgbench -i failed"; }
psql_admin -d "$PG_DB_URL" -c "VACUUM ANALYZE" >/dev/null

build_image() { # build_image TAG CONTEXT
  docker build -q -t "$1" "$2" >> "$BENCH/logs/docker-build.log" 2>&1 \
    || { cat "$BENCH/logs/docker-build.log" >&2; die "docker build $1 failed"; }
}

write_small_layer() { # write_small_layer DIR NAME GENERATION
  mkdir -p "$1/app"
  head -c $((SMALL_MIB * 1024 * 1024)) /dev/urandom > "$1/app/small.bin"
  printf 'image %s generation %s built %s\n' "$2" "$3" "$(date -u +%FT%TZ)" > "$1/app/VERSION"
  seq 1 5000 | sed "s/^/$2 setting /" > "$1/app/settings.txt"
}

say "images: a ${LAYER_MIB} MiB shared layer, then sbbench-{a,b,c} with ${SMALL_MIB} MiB each"
mkdir -p "$BENCH/images/large"
head -c $((LAYER_MIB * 1024 * 1024)) /dev/urandom > "$BENCH/images/large/big.bin"
printf 'FROM %s\nLABEL %s=1\nCOPY big.bin /data/big.bin\n' "$SB_TEST_BASE_IMAGE" "$LABEL" \
  > "$BENCH/images/large/Dockerfile"
build_image "$LARGE_IMAGE" "$BENCH/images/large"
for img in "${IMAGES[@]}"; do
  n=${img%%:*}; n=${n#sbbench-}
  ctx="$BENCH/images/$n"
  write_small_layer "$ctx" "$n" 1
  printf 'FROM %s\nCOPY app /app\nCMD ["/bin/cat", "/app/VERSION"]\n' "$LARGE_IMAGE" > "$ctx/Dockerfile"
  build_image "$img" "$ctx"
done
rm -f "$BENCH/images/large/big.bin"   # lives in the image now

say "files: $FILES_N small files"
read -r n bytes < <(python3 "$HERE/gen_files.py" create "$BENCH/files" "$FILES_N")
meta files_count "$n"
meta files_bytes "$bytes"
meta pg_scale "$PG_SCALE"
meta layer_mib "$LAYER_MIB"
meta small_layer_mib "$SMALL_MIB"
meta images "${IMAGES[*]}"
meta db_bytes "$(psql_admin -tAc "SELECT pg_database_size('$DB')")"
meta images_unique_bytes "$(docker image inspect -f '{{.Size}}' "${IMAGES[@]}" | awk -v l=$((LAYER_MIB * 1024 * 1024)) '{ s += $1 - l } END { print s + l }')"
sync

# --- the three contenders ----------------------------------------------------
RESTIC_REPO="$BENCH/restic-repo"
export RESTIC_CACHE_DIR="$BENCH/restic-cache"
RESTIC_PW=$(head -c 24 /dev/urandom | base64)
RESTIC_PASSWORD="$RESTIC_PW" restic -r "$RESTIC_REPO" init --repository-version 2 \
  > "$BENCH/logs/restic-init.log" 2>&1 || { cat "$BENCH/logs/restic-init.log" >&2; die "restic init failed"; }

SB_CONFIG="$BENCH/stack-backup.toml"
SB_REPO="$BENCH/sb-repo"
SB_STATUS=available
if [ ! -x "$SB_BIN" ]; then
  SB_STATUS="not available: no binary at $SB_BIN (cargo build --release -p stack-backup)"
fi
meta sb_bin "$SB_BIN"
if [ -x "$SB_BIN" ]; then
  meta sb_version "$("$SB_BIN" --version 2>/dev/null | sed 's/^stack-backup //')"
  meta sb_profile "$(sb_profile)"
  [ "$(sb_profile)" != debug ] || say "warning: $SB_BIN is a debug build; timings of (c) mean little"
fi

# stack-backup gets only what its config says: no database or repository
# password, URL or config from this script's environment, and its cache in
# the bench dir.
sb_command_for "$SB_CONFIG"
sb() { "${SB_CMD[@]}" "$@"; }

if [ "$SB_STATUS" = available ]; then
  write_bench_config "$SB_CONFIG" bench "$BENCH/files"
  # init and doctor are not timed; they also check the config and the
  # wiring while the binary has no backup command yet.
  if ! sb init > "$BENCH/logs/sb-init.log" 2>&1; then
    SB_STATUS="not available: 'stack-backup init' failed, see $BENCH/logs/sb-init.log"
  else
    sb doctor > "$BENCH/logs/sb-doctor.log" 2>&1 \
      || say "stack-backup doctor complained (exit $?), see $BENCH/logs/sb-doctor.log"
    rc=0
    help=$(sb backup --help 2>&1) || rc=$?
    if [ "$rc" != 0 ]; then
      if printf '%s' "$help" | grep -q 'unrecognized subcommand'; then
        SB_STATUS="not available: $SB_BIN has no backup command yet"
      else
        SB_STATUS="not available: 'stack-backup backup --help' exited $rc"
      fi
    fi
  fi
fi
meta sb_status "$SB_STATUS"
[ "$SB_STATUS" = available ] || say "(c) stack-backup: $SB_STATUS"

# measure SCENARIO TOOL RUN CMD... -- runs CMD under /usr/bin/time, logs its
# output, appends a row to results.tsv (sizes are filled in by the caller).
LAST_RC=0
measure() {
  local scen=$1 tool=$2 run=$3; shift 3
  local tf="$BENCH/logs/$run-$tool.time" log="$BENCH/logs/$run-$tool.log" rc=0 wall rss
  say "$scen: ($tool) running"
  /usr/bin/time -f '%e %M' -o "$tf" "$@" > "$log" 2>&1 || rc=$?
  read -r wall rss < <(tail -n 1 "$tf")
  sync   # the next contender must not pay for this one's dirty pages
  LAST_RC=$rc
  LAST_WALL=$wall
  LAST_RSS=$rss
  if [ "$rc" != 0 ]; then
    say "$scen: ($tool) FAILED with exit code $rc after ${wall}s; last lines of $log:"
    tail -n 5 "$log" >&2
  else
    say "$scen: ($tool) ${wall}s, peak RSS $((rss / 1024)) MiB"
  fi
}
row() { # row SCENARIO TOOL RUN SIZE_RUN SIZE_TOTAL NOTE
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$LAST_WALL" "$LAST_RSS" "$LAST_RC" "$4" "$5" "$6" >> "$RESULTS"
}
dusb() { du -sb "$1" 2>/dev/null | awk '{ print $1 }'; }

# Reads every component once, untimed, so that no contender pays for a cold
# cache the one before it warmed; records the raw stream sizes.
warm_up() { # warm_up SCENARIO
  local b img total=0
  b=$(pg_dump -Fc -Z0 -d "$PG_DB_URL" | wc -c); meta "$1.dump_bytes" "$b"
  for img in "${IMAGES[@]}"; do
    b=$(docker save "$img" | wc -c); total=$((total + b))
  done
  meta "$1.docker_save_bytes" "$total"
  b=$(tar -C "$BENCH/files" -c . | wc -c); meta "$1.tar_bytes" "$b"
  sync
}

run_scenario() { # run_scenario SCENARIO RUN
  local scen=$1 run=$2 n
  say "== $scen backup ($run)"
  warm_up "$scen"

  measure "$scen" a "$run" bash "$HERE/plain-backup.sh" "$BENCH/out-a/$run" "$PG_DB_URL" "$BENCH/files" "${IMAGES[@]}"
  row "$scen" a "$run" "$(dusb "$BENCH/out-a/$run")" "$(dusb "$BENCH/out-a")" ""

  measure "$scen" b "$run" env RESTIC_REPOSITORY="$RESTIC_REPO" RESTIC_PASSWORD="$RESTIC_PW" \
    bash "$HERE/restic-backup.sh" "$PG_DB_URL" "$BENCH/files" "${IMAGES[@]}"
  row "$scen" b "$run" "" "$(dusb "$RESTIC_REPO")" ""

  if [ "$SB_STATUS" = available ]; then
    measure "$scen" c "$run" "${SB_CMD[@]}" backup --name "$run"
    # The set must really be there, as one snapshot stock restic can list.
    n=$(restic -r "$SB_REPO" --password-file "$BENCH/sb.key" --no-cache snapshots --json --tag "name:$run" 2>>"$BENCH/logs/$run-c.log" \
      | python3 -c 'import json, sys; print(len(json.load(sys.stdin) or []))' 2>/dev/null || echo 0)
    local note="snapshots tagged name:$run: $n"
    [ "$n" = 1 ] || say "$scen: (c) expected 1 snapshot tagged name:$run in $SB_REPO, found $n"
    row "$scen" c "$run" "" "$(dusb "$SB_REPO")" "$note"
  else
    LAST_WALL="" LAST_RSS="" LAST_RC=""
    row "$scen" c "$run" "" "" "$SB_STATUS"
  fi
}

day_of_change() {
  local n bytes ctx old t0 t1
  say "== a day of change"
  t0=$(date +%s.%N)
  pgbench_ -c "$PGBENCH_CLIENTS" -j "$PGBENCH_CLIENTS" -t "$PGBENCH_TX" "$DB" > "$BENCH/logs/pgbench-run.log" 2>&1 \
    || { cat "$BENCH/logs/pgbench-run.log" >&2; die "pgbench run failed"; }
  t1=$(date +%s.%N)
  meta change.pgbench_transactions "$((PGBENCH_CLIENTS * PGBENCH_TX))"
  meta change.pgbench_seconds "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
  # One image gets a new top layer under the same tag.
  ctx="$BENCH/images/b"
  old=$(docker image inspect -f '{{.Id}}' "${IMAGES[1]}")
  write_small_layer "$ctx" b 2
  build_image "${IMAGES[1]}" "$ctx"
  [ "$(docker image inspect -f '{{.Id}}' "${IMAGES[1]}")" != "$old" ] || die "rebuilding ${IMAGES[1]} did not change it"
  docker image rm "$old" >/dev/null 2>&1 || true
  meta change.image_rebuilt "${IMAGES[1]}"
  read -r n bytes < <(python3 "$HERE/gen_files.py" change "$BENCH/files" "$CHANGE_PERCENT" 2)
  meta change.files_changed "$n"
  meta change.files_bytes_written "$bytes"
  psql_admin -d "$PG_DB_URL" -c "CHECKPOINT" >/dev/null
  sync
}

T_START=$(date +%s)
run_scenario first run1
run_scenario unchanged run2
day_of_change
run_scenario changed run3
meta total_seconds "$(( $(date +%s) - T_START ))"
meta loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"

# --- report ------------------------------------------------------------------
mkdir -p "$HERE/results"
JSON="$HERE/results/backup-$TS.json"
doc_args=()
[ "$SB_BENCH_DOC" = 1 ] && doc_args=(--doc "$ROOT/docs/benchmarks.md")
python3 "$HERE/report.py" --results "$RESULTS" --meta "$META" --json "$JSON" "${doc_args[@]}"
say "results: $JSON${doc_args[1]:+ and ${doc_args[1]}}"
say "the stack stays in $BENCH, database $DB and images sbbench-*; 'bash bench/backup.sh --clean' removes them"
