#!/usr/bin/env bash
# MariaDB benchmark: stack-backup's `[mysql.NAME]` against
# `mariadb-dump | restic backup --stdin` (and `restic dump | mariadb` for the
# restore), on the same database in the same run. See docs/benchmarks.md
# for the PostgreSQL bench this mirrors.
#
#   bash bench/mysql.sh            # generate, run, print the table
#   bash bench/mysql.sh --clean    # drop the bench database and user, remove the dir
#
# As root on Debian; sources scripts/services.sh (MariaDB, restic). The
# database `sbbench_my` has the tables `pgbench -i -s 20` makes (2,000,000
# accounts at scale 20), owned by the user `sbbench_my` (privileges on it
# only); the restores go through the services' admin user.
# Scenarios, each timed for both tools:
#   first      backup into an empty repository
#   unchanged  a second backup with nothing changed
#   restore    the first backup back into the live database
# Each round starts with one untimed read of every table; before each
# backup scenario (both tools) the script waits until InnoDB's
# log sequence number stood still for 3 s (at most 120 s): decision 0038
# reuses nothing while the server writes, and after a bulk load or restore
# InnoDB's own purge writes for a while.
# Targets (issue 16): stack-backup ≤ 0.8× first, ≤ 0.25× unchanged,
# ≤ 0.8× restore.
#
# Environment: SB_BENCH_DIR (default /var/tmp/stack-backup-bench-mysql; wiped
# at start), SB_BENCH_MY_SCALE (default 20), SB_BENCH_ROUNDS (default 3, at least
# 3: each from empty repositories, the tool that runs first alternating; the
# table shows medians, the ratio per round, and per round whether the
# unchanged backup reused the dump),
# SB_BIN (default: a release build of this checkout).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
cd "$ROOT"

say() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"

BENCH=${SB_BENCH_DIR:-/var/tmp/stack-backup-bench-mysql}
case "$BENCH" in /?*) ;; *) die "SB_BENCH_DIR must be an absolute path other than /" ;; esac
MARKER="$BENCH/.stack-backup-bench"
SCALE=${SB_BENCH_MY_SCALE:-20}
DB=sbbench_my
# A throwaway password for the bench user; it protects nothing real.
APP_PW=sbbench-my-pw

# shellcheck source=../scripts/services.sh
source scripts/services.sh
set -euo pipefail
# shellcheck source=common.sh
source bench/common.sh
ensure_gnu_time

root_sql() { mariadb --protocol=socket -e "$1"; }

clean_all() {
  root_sql "DROP DATABASE IF EXISTS $DB; DROP USER IF EXISTS '$DB'@'%'"
  if [ -e "$BENCH" ]; then
    [ -f "$MARKER" ] || die "$BENCH was not made by this script; remove it or set SB_BENCH_DIR"
    rm -rf "$BENCH"
  fi
}
if [ "${1:-}" = --clean ]; then clean_all; exit 0; fi

ensure_sb_bin || die "building stack-backup failed"
clean_all
mkdir -p "$BENCH"/{logs,restore}
touch "$MARKER"

say "generating $DB at scale $SCALE"
root_sql "CREATE DATABASE $DB; CREATE USER '$DB'@'%' IDENTIFIED BY '$APP_PW';
  GRANT ALL PRIVILEGES ON $DB.* TO '$DB'@'%'"
mariadb --protocol=socket "$DB" <<SQL
CREATE TABLE pgbench_branches (bid INT PRIMARY KEY, bbalance INT, filler CHAR(88)) ENGINE=InnoDB;
CREATE TABLE pgbench_tellers (tid INT PRIMARY KEY, bid INT, tbalance INT, filler CHAR(84)) ENGINE=InnoDB;
CREATE TABLE pgbench_accounts (aid INT PRIMARY KEY, bid INT, abalance INT, filler CHAR(84)) ENGINE=InnoDB;
CREATE TABLE pgbench_history (tid INT, bid INT, aid INT, delta INT, mtime DATETIME, filler CHAR(22)) ENGINE=InnoDB;
INSERT INTO pgbench_branches SELECT seq, 0, NULL FROM seq_1_to_$SCALE;
INSERT INTO pgbench_tellers SELECT seq, (seq - 1) DIV 10 + 1, 0, NULL FROM seq_1_to_$((SCALE * 10));
-- Not spaces: CHAR drops trailing ones, which made a 34 MiB dump at scale
-- 20; 84 letters make it about the size of the PostgreSQL bench's dump.
INSERT INTO pgbench_accounts SELECT seq, (seq - 1) DIV 100000 + 1, 0, REPEAT('x', 84) FROM seq_1_to_$((SCALE * 100000));
SQL
SIZE=$(mariadb --protocol=socket -N -e "SELECT ROUND(SUM(DATA_LENGTH + INDEX_LENGTH) / 1048576) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '$DB'")
say "$DB: $((SCALE * 100000)) accounts, $SIZE MiB on disk"

export RESTIC_PASSWORD=bench-repo-password STACK_BACKUP_PASSWORD=bench-repo-password
export STACK_BACKUP_STATE_DIR="$BENCH/state"
cat > "$BENCH/bench.toml" <<EOF
[stack]
name = "sbbench-my"
min-free-space = "1MiB"

[repository]
path = "$BENCH/sb"

[mysql.main]
url = "mysql://$DB:$APP_PW@127.0.0.1:$SB_MYSQL_PORT/$DB"
admin-url = "$SB_TEST_MYSQL_ADMIN_URL"
EOF
chmod 600 "$BENCH/bench.toml"
# The stock way's option file: the password out of argv there too.
printf '[client]\nuser=%s\npassword=%s\nhost=127.0.0.1\nport=%s\nprotocol=TCP\n' \
  "$DB" "$APP_PW" "$SB_MYSQL_PORT" > "$BENCH/my.cnf"
chmod 600 "$BENCH/my.cnf"

# timed NAME CMD... -> wall seconds on stdout; the command's output in
# logs/NAME.log (stdout) and logs/NAME.err
timed() {
  local name=$1; shift
  /usr/bin/time -f '%e' -o "$BENCH/logs/$name.time" "$@" >"$BENCH/logs/$name.log" 2>"$BENCH/logs/$name.err" \
    || die "$name failed: $(tail -3 "$BENCH/logs/$name.err")"
  cat "$BENCH/logs/$name.time"
}

RESTIC_BACKUP="mariadb-dump --defaults-extra-file='$BENCH/my.cnf' --single-transaction --routines --triggers --events --hex-blob --skip-dump-date --no-tablespaces $DB \
  | restic backup -q -r '$BENCH/restic' --stdin --stdin-filename $DB.sql"
RESTIC_RESTORE="mariadb --protocol=socket -e 'DROP DATABASE $DB; CREATE DATABASE $DB' && \
  restic dump -r '$BENCH/restic' latest /$DB.sql | mariadb --protocol=socket $DB"
SB=("$SB_BIN" --config "$BENCH/bench.toml" --no-progress)

# The server-wide InnoDB log sequence number (decision 0038's mark).
lsn() {
  mariadb --protocol=socket -N -e "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'INNODB_LSN_CURRENT'"
}
# Before each backup scenario, for both tools alike: waits (at most 120 s)
# until the LSN stood still for 3 s. After the generation or a restore,
# InnoDB's purge and page flushing write redo for tens of seconds; a
# backup taken meanwhile sees a moving server, which 0038 rightly never
# calls unchanged. Prints the seconds waited ("120+" when it never stood).
wait_quiet() {
  local start=$SECONDS since=$SECONDS last now
  last=$(lsn)
  while [ $((SECONDS - start)) -lt 120 ]; do
    sleep 0.5
    now=$(lsn)
    [ "$now" != "$last" ] && { last=$now; since=$SECONDS; }
    [ $((SECONDS - since)) -ge 3 ] && { echo $((SECONDS - start)); return; }
  done
  echo "120+"
}

ROUNDS=${SB_BENCH_ROUNDS:-3}
# Fewer than 3 rounds make a median of one or two: no verdict.
[[ "$ROUNDS" =~ ^[0-9]+$ ]] && [ "$ROUNDS" -ge 3 ] || die "SB_BENCH_ROUNDS must be a number ≥ 3, not '$ROUNDS'"
# Each round starts from empty repositories; every command's time is kept
# in logs/NAME-rROUND.time.
for r in $(seq 1 "$ROUNDS"); do
  rm -rf "$BENCH/restic" "$BENCH/sb" "$BENCH/state"
  restic init -q -r "$BENCH/restic" >/dev/null
  "$SB_BIN" --config "$BENCH/bench.toml" init >/dev/null 2>&1
  # Odd rounds run restic first, even rounds stack-backup: neither always
  # meets a cold cache or the other's leftovers.
  order=(restic sb); [ $((r % 2)) = 0 ] && order=(sb restic)
  # One untimed read of every table, as bench/backup.sh reads each
  # contender's data once: the first full read after a bulk load or a
  # restore makes InnoDB write (it was measured moving the LSN between a
  # backup and the next), which the timed backups should not pay or see.
  # It comes once the restore's own writes (purge, about 16 s after the
  # stock client's restore) are over: a read during them absorbed
  # nothing, and the first timed backup then moved the LSN itself.
  wait_quiet >/dev/null
  mariadb-dump --defaults-extra-file="$BENCH/my.cnf" --single-transaction --no-tablespaces "$DB" >/dev/null
  for run in first unchanged; do
    quiet=$(wait_quiet)
    say "round $r: $run backup, ${order[0]} first (LSN still after ${quiet} s; $(uptime | sed 's/.*load/load/'))"
    for tool in "${order[@]}"; do
      if [ "$tool" = restic ]; then
        timed "restic-$run-r$r" bash -o pipefail -c "$RESTIC_BACKUP" >/dev/null
      else
        timed "sb-$run-r$r" "${SB[@]}" --json backup --name "$run" >/dev/null
      fi
    done
  done
  say "round $r: restore, ${order[0]} first ($(uptime | sed 's/.*load/load/'))"
  for tool in "${order[@]}"; do
    if [ "$tool" = restic ]; then
      timed "restic-restore-r$r" bash -o pipefail -c "$RESTIC_RESTORE" >/dev/null
    else
      timed "sb-restore-r$r" "${SB[@]}" restore first --yes >/dev/null
    fi
  done
done

DUMP=$(cat "$BENCH/logs/sb-restore-r1".{log,err} | awk '/MiB read back/ { print $(NF - 6), $(NF - 5); exit }')
python3 - "$BENCH/logs" "$ROUNDS" "$DUMP" <<'PY'
import json, statistics, sys
logs, rounds, dump = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def reused(r):
    report = json.load(open(f"{logs}/sb-unchanged-r{r}.log"))
    return any(c.get("component") == "mysql.main" and c.get("reused") for c in report["components"])
t = lambda n, r: float(open(f"{logs}/{n}-r{r}.time").read().split()[-1])
print(f"\n{rounds} rounds, median seconds; dump {dump}")
print("| scenario | restic (median) | stack-backup (median) | ratio per round | **ratio (median)** | target |")
print("|---|---|---|---|---|---|")
for s, target in (("first", 0.8), ("unchanged", 0.25), ("restore", 0.8)):
    a = [t(f"restic-{s}", r) for r in range(1, rounds + 1)]
    b = [t(f"sb-{s}", r) for r in range(1, rounds + 1)]
    ratios = [y / x for x, y in zip(a, b)]
    med = statistics.median(ratios)
    print(f"| {s} | {statistics.median(a):.2f} s | {statistics.median(b):.2f} s | "
          + ", ".join(f"{x:.2f}" for x in ratios)
          + f" | **{med:.2f}** | ≤ {target} ({'met' if med <= target else 'NOT met'}) |")
print("\nunchanged backup reused the dump, per round: "
      + ", ".join("yes" if reused(r) else "NO" for r in range(1, rounds + 1)))
PY
say "profile $(sb_profile); load now $(uptime | sed 's/.*load average: //'); logs in $BENCH/logs; bash bench/mysql.sh --clean removes it all"
