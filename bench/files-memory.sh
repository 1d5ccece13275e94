#!/usr/bin/env bash
# Peak RSS per file (issue 18): a stack of one directory of small files only,
# no database, no images, so what grows with the number of files is all
# there is. For each COUNT: a first backup, an unchanged one, a restore onto
# the directory with 1 % of its files changed (its pre-restore backup walks
# the live directory), `verify --read-data`, a drill (the set restored into
# a scratch directory and checked there); the wall seconds and peak RSS
# (`/usr/bin/time -f '%e %M'`) of each, and the restored files' SHA-256
# compared with the state backed up (a mismatch stops the run).
#
#   bash bench/files-memory.sh [COUNT...]     # default: 10000 100000 300000
#
# Environment: SB_BIN (default: a release build, built here),
# SB_FILES_DIR (default /var/tmp/stack-backup-files; wiped at start).
# Prints a Markdown table; bytes per file is the difference of the peaks
# between the smallest and the largest COUNT, divided by the difference of
# the counts.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
cd "$ROOT"
# shellcheck source=common.sh
source bench/common.sh
ensure_gnu_time

say() { printf '[files] %s\n' "$*" >&2; }
die() { printf '[files] error: %s\n' "$*" >&2; exit 1; }

COUNTS=("$@")
[ ${#COUNTS[@]} -gt 0 ] || COUNTS=(10000 100000 300000)
for n in "${COUNTS[@]}"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "COUNT must be a positive integer, got $n"
done

DIR=${SB_FILES_DIR:-/var/tmp/stack-backup-files}
case "$DIR" in /?*) ;; *) die "SB_FILES_DIR must be an absolute path other than /" ;; esac
if [ -z "${SB_BIN:-}" ]; then
  say "building the release binary"
  cargo build --locked --release -q -p stack-backup
  SB_BIN=$ROOT/target/release/stack-backup
fi
[ -x "$SB_BIN" ] || die "SB_BIN=$SB_BIN is not executable"

rm -rf "$DIR"
mkdir -p "$DIR"
RESULTS=$DIR/results.tsv
: > "$RESULTS"

# One timed command: appends "count step seconds peak_kib" to RESULTS.
timed() {
  local n=$1 step=$2
  shift 2
  local t=$DIR/time.out
  /usr/bin/time -o "$t" -f '%e %M' "$@" > "$DIR/$step.out" 2> "$DIR/$step.err" \
    || { cat "$DIR/$step.err" >&2; die "$step of $n files failed"; }
  read -r secs kib < "$t"
  printf '%s\t%s\t%s\t%s\n' "$n" "$step" "$secs" "$kib" >> "$RESULTS"
  say "$n files: $step ${secs}s, peak $((kib / 1024)) MiB"
}

for n in "${COUNTS[@]}"; do
  run=$DIR/$n
  mkdir -p "$run"
  say "generating $n files"
  python3 bench/gen_files.py create "$run/files" "$n" > /dev/null
  ( umask 077; head -c 32 /dev/urandom | base64 > "$run/key" )
  cat > "$run/stack-backup.toml" <<EOF
[stack]
name = "files"
min-free-space = "1GiB"

[repository]
path = "$run/repo"
password-file = "$run/key"

[state]
dir = "$run/state"

[paths.media]
path = "$run/files"
EOF
  export STACK_BACKUP_CONFIG=$run/stack-backup.toml
  "$SB_BIN" --no-progress -q init > /dev/null
  (cd "$run/files" && find . -type f -print0 | sort -z | xargs -0 sha256sum) > "$run/before.sha"
  timed "$n" first "$SB_BIN" --no-progress -q backup --name first
  timed "$n" unchanged "$SB_BIN" --no-progress -q backup --name unchanged
  python3 bench/gen_files.py change "$run/files" 1 7 > /dev/null
  timed "$n" restore "$SB_BIN" --no-progress -q restore unchanged --yes
  (cd "$run/files" && sha256sum --quiet -c "$run/before.sha") \
    || die "the restored directory of $n files differs from the set"
  [ "$(find "$run/files" -type f | wc -l)" = "$(wc -l < "$run/before.sha")" ] \
    || die "the restored directory of $n files has files the set has not"
  timed "$n" verify "$SB_BIN" --no-progress -q verify unchanged --read-data
  timed "$n" drill "$SB_BIN" --no-progress -q drill unchanged
  unset STACK_BACKUP_CONFIG
  rm -rf "$run"
done

python3 - "$RESULTS" <<'EOF'
import sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
counts = sorted({int(r[0]) for r in rows})
steps = ["first", "unchanged", "restore", "verify", "drill"]
peak = {(int(r[0]), r[1]): int(r[3]) for r in rows}
secs = {(int(r[0]), r[1]): float(r[2]) for r in rows}
print("| step | " + " | ".join(f"{c} files" for c in counts) + " | bytes per file |")
print("| --- |" + " ---: |" * (len(counts) + 1))
for s in steps:
    cells = [f"{peak[(c, s)] / 1024:.0f} MiB, {secs[(c, s)]:.1f} s" for c in counts]
    per = "-"
    if len(counts) > 1:
        lo, hi = counts[0], counts[-1]
        per = f"{(peak[(hi, s)] - peak[(lo, s)]) * 1024 / (hi - lo):.0f}"
    print(f"| {s} | " + " | ".join(cells) + f" | {per} |")
EOF
