#!/usr/bin/env bash
# S3 benchmark: stack-backup backup and restore into a repository on an
# S3-compatible server (moto, on this machine) against a local repository,
# on the same stack in the same run. Reports ratios S3/local.
# See docs/benchmarks.md ("Remote repository on S3").
#
#   bash bench/s3.sh            # generate the stack, run, report
#   bash bench/s3.sh --clean    # remove the bench dir and database
#
# As root on Debian. It sources scripts/services.sh (PostgreSQL, Redis,
# Docker Engine, restic, moto) and then:
#   1. generates a stack: database `sbbench_s3` (pgbench -i -s $PG_SCALE),
#      a directory of $FILES_N small files and one $BIG_MIB MiB random file;
#   2. starts a private moto server (own port, own log) so that nothing else
#      shares it;
#   3. for each round, for local then S3 (the order alternates by round):
#        first backup (cold, empty repository and cache),
#        a small change, second backup (incremental, warm cache),
#        restore of the first set (the whole safety chain, --yes);
#      each timed (wall seconds, peak RSS with GNU time);
#   4. prints a table with the ratios S3/local (per round and the median)
#      and, with SB_BENCH_DOC=1 (default), writes the results section of
#      docs/benchmarks.md.
#
# Environment:
#   SB_BENCH_DIR      work dir (default /var/tmp/stack-backup-bench-s3); wiped
#   SB_BENCH_ROUNDS   rounds (default 3)
#   SB_BENCH_PG_SCALE pgbench scale (default 5, ~75 MiB of table data)
#   SB_BENCH_FILES    small files (default 3000)
#   SB_BENCH_BIG_MIB  size of the random file (default 64)
#   SB_BIN            stack-backup binary (default: target/release/stack-backup,
#                     built or brought up to date first)
#   SB_BENCH_DOC      1 = write docs/benchmarks.md (default), 0 = don't
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
cd "$ROOT"

say() { printf '[bench-s3] %s\n' "$*" >&2; }
die() { printf '[bench-s3] error: %s\n' "$*" >&2; exit 1; }

case "${1:-}" in
  ""|--clean) ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument $1 (try --help)" ;;
esac
[ "$(id -u)" = 0 ] || die "run as root (it starts services)"

BENCH=${SB_BENCH_DIR:-/var/tmp/stack-backup-bench-s3}
case "$BENCH" in /*) ;; *) die "SB_BENCH_DIR must be an absolute path" ;; esac
BENCH=${BENCH%/}
[ -n "$BENCH" ] && [ "$BENCH" != / ] || die "SB_BENCH_DIR must not be /"
MARKER="$BENCH/.stack-backup-bench-s3"

# shellcheck source=../scripts/services.sh
source scripts/services.sh
set -euo pipefail

# shellcheck source=common.sh
source bench/common.sh
ensure_gnu_time

ROUNDS=${SB_BENCH_ROUNDS:-3}
PG_SCALE=${SB_BENCH_PG_SCALE:-5}
FILES_N=${SB_BENCH_FILES:-3000}
BIG_MIB=${SB_BENCH_BIG_MIB:-64}
SB_BENCH_DOC=${SB_BENCH_DOC:-1}
DB=sbbench_s3
PG_BASE="postgres://$SB_PG_USER@127.0.0.1:$SB_PG_PORT"
export PGPASSWORD="$SB_PG_PASSWORD"   # env only, never argv
psql_admin() { psql -X -q -v ON_ERROR_STOP=1 -d "$PG_BASE/postgres" "$@"; }

ensure_sb_bin || die "building stack-backup failed"

clean_all() {
  PGOPTIONS='-c client_min_messages=warning' psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
  if [ -e "$BENCH" ]; then
    if [ -f "$MARKER" ] || [ -z "$(ls -A "$BENCH")" ]; then
      rm -rf "$BENCH"
    else
      die "$BENCH exists and was not made by this script; remove it or set SB_BENCH_DIR"
    fi
  fi
}
if [ "${1:-}" = --clean ]; then clean_all; exit 0; fi
clean_all
mkdir -p "$BENCH"/{files,logs}
touch "$MARKER"
( umask 077; printf '%s\n' "$SB_PG_PASSWORD" > "$BENCH/db.password" )

# --- the stack -------------------------------------------------------------
server_major=$(psql_admin -tAc 'SHOW server_version_num' | awk '{ print int($1 / 10000) }')
PGBENCH=/usr/lib/postgresql/$server_major/bin/pgbench
[ -x "$PGBENCH" ] || PGBENCH=$(ls -d /usr/lib/postgresql/*/bin/pgbench | sort -V | tail -1)
say "database $DB: pgbench -i -s $PG_SCALE; $FILES_N files; a $BIG_MIB MiB file"
psql_admin -c "CREATE DATABASE $DB"
"$PGBENCH" -h 127.0.0.1 -p "$SB_PG_PORT" -U "$SB_PG_USER" -i -q -s "$PG_SCALE" "$DB" \
  > "$BENCH/logs/pgbench.log" 2>&1 || { cat "$BENCH/logs/pgbench.log" >&2; die "pgbench -i failed"; }
python3 - "$BENCH/files" "$FILES_N" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(42)
for i in range(n):
    d = os.path.join(root, f"d{i % 50:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}.txt"), "w") as f:
        f.write(("line %d of file %d\n" % (rnd.randrange(10**6), i)) * rnd.randrange(5, 200))
PY
head -c $((BIG_MIB * 1024 * 1024)) /dev/urandom > "$BENCH/files/big.bin"
STACK_MIB=$(du -sm "$BENCH/files" | awk '{ print $1 }')
DB_MIB=$(psql_admin -tAc "SELECT pg_database_size('$DB') / 1048576")

# --- a private S3 server -----------------------------------------------------
S3_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
S3_LOG="$BENCH/logs/moto.log"
"$SB_TEST_MOTO_SERVER" -H 127.0.0.1 -p "$S3_PORT" > "$S3_LOG" 2>&1 &
MOTO_PID=$!
trap 'kill "$MOTO_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
  curl -sf -o /dev/null "http://127.0.0.1:$S3_PORT/" && break
  sleep 1
done
curl -sf -o /dev/null "http://127.0.0.1:$S3_PORT/" || die "moto did not start (log $S3_LOG)"

export STACK_BACKUP_PASSWORD=bench-password-not-secret
# moto accepts any credentials
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_DEFAULT_REGION=us-east-1

write_config() { # write_config FILE REPO-LINE CACHE-DIR
  cat > "$1" <<EOF
[stack]
name = "bench"
min-free-space = "100MiB"

[repository]
$2
cache-dir = "$3"

[postgres.main]
url = "$PG_BASE/$DB"
password-file = "$BENCH/db.password"

[paths.files]
path = "$BENCH/files"
EOF
}

change() { # the same small change before every second backup
  psql_admin -d "$PG_BASE/$DB" -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 2000" >/dev/null
  for i in $(seq 0 49); do printf 'changed\n' >> "$BENCH/files/d$(printf %02d "$i")/f$(printf %05d "$i").txt"; done
}

now() { date +%s.%N; }
RESULTS="$BENCH/results.tsv"
printf 'round\ttarget\tstep\twall_s\tmax_rss_kib\n' > "$RESULTS"
timed() { # timed ROUND TARGET STEP CMD...   (wall seconds, peak RSS)
  local r=$1 t=$2 s=$3 t0 t1 log="$BENCH/logs/$1-$2-$3.log"; shift 3
  t0=$(now)
  /usr/bin/time -f %M -o "$log.rss" "$@" > "$log" 2>&1 || { cat "$log" >&2; die "$t $s failed (round $r)"; }
  t1=$(now)
  printf '%s\t%s\t%s\t%s\t%s\n' "$r" "$t" "$s" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')" \
    "$(tail -1 "$log.rss")" >> "$RESULTS"
}

run_target() { # run_target ROUND TARGET
  local r=$1 t=$2 cfg="$BENCH/$1-$2.toml" cache="$BENCH/cache-$1-$2" repo_line
  if [ "$t" = local ]; then
    repo_line="path = \"$BENCH/repo-$r\""
  else
    curl -sf -X PUT -o /dev/null "http://127.0.0.1:$S3_PORT/bench-$r"
    repo_line="url = \"s3:http://127.0.0.1:$S3_PORT/bench-$r/repo\""
  fi
  write_config "$cfg" "$repo_line" "$cache"
  "$SB_BIN" --config "$cfg" init > "$BENCH/logs/$r-$t-init.log" 2>&1
  say "round $r, $t: first backup, second backup, restore"
  timed "$r" "$t" backup1 "$SB_BIN" --config "$cfg" --no-progress backup --name first
  change
  timed "$r" "$t" backup2 "$SB_BIN" --config "$cfg" --no-progress backup --name second
  timed "$r" "$t" restore "$SB_BIN" --config "$cfg" --no-progress restore first --yes
}

for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="local s3"; else order="s3 local"; fi
  for t in $order; do run_target "$r" "$t"; done
done

# --- report --------------------------------------------------------------------
REPORT=$(python3 - "$RESULTS" "$STACK_MIB" "$DB_MIB" "$PG_SCALE" "$FILES_N" "$BIG_MIB" <<'PY'
import csv, statistics, sys, datetime, os
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
stack_mib, db_mib, pg_scale, files_n, big = sys.argv[2:7]
t = {}
for r in rows:
    t[(r["round"], r["target"], r["step"])] = float(r["wall_s"])
rounds = sorted({r["round"] for r in rows}, key=int)
steps = [("backup1", "first backup (cold)"), ("backup2", "second backup (incremental)"),
         ("restore", "restore (whole safety chain)")]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
out = []
out.append(f"Run {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores ({cpu}); "
           f"stack: PostgreSQL `pgbench -s {pg_scale}` ({db_mib} MiB database), "
           f"{files_n} small files and a {big} MiB random file ({stack_mib} MiB of files); "
           f"S3 = moto server on this machine (loopback, in memory); {len(rounds)} rounds, order alternating.")
out.append("")
rss = {}
for r in rows:
    rss[(r["round"], r["target"], r["step"])] = int(r["max_rss_kib"]) / 1024
out.append("| step | local (median) | S3 (median) | S3/local per round | **S3/local (median)** | peak RSS local / S3 (median) |")
out.append("| --- | ---: | ---: | --- | ---: | ---: |")
for key, label in steps:
    loc = [t[(r, "local", key)] for r in rounds]
    s3 = [t[(r, "s3", key)] for r in rounds]
    ratios = [b / a for a, b in zip(loc, s3)]
    rl = statistics.median(rss[(r, "local", key)] for r in rounds)
    rs = statistics.median(rss[(r, "s3", key)] for r in rounds)
    out.append(f"| {label} | {statistics.median(loc):.2f} s | {statistics.median(s3):.2f} s | "
               + ", ".join(f"{x:.2f}" for x in ratios) + f" | **{statistics.median(ratios):.2f}** | {rl:.0f} / {rs:.0f} MiB |")
print("\n".join(out))
PY
)
printf '\n%s\n\n' "$REPORT"
cp "$RESULTS" "$BENCH/results-$(date -u +%Y%m%dT%H%M%SZ).tsv"

if [ "$SB_BENCH_DOC" = 1 ]; then
  python3 - docs/benchmarks.md "$REPORT" <<'PY'
import sys
path, report = sys.argv[1], sys.argv[2]
text = open(path).read()
begin, end = "<!-- BEGIN s3 results -->", "<!-- END s3 results -->"
block = f"{begin}\n{report}\n{end}"
if begin in text and end in text:
    text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
else:
    text = text.rstrip("\n") + "\n\n## Remote repository on S3 (`bench/s3.sh`)\n\n" + block + "\n"
open(path, "w").write(text)
PY
  say "wrote the results into docs/benchmarks.md"
fi
PGOPTIONS='-c client_min_messages=warning' psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
