#!/usr/bin/env bash
# Release profile comparison (issue 18): for each variant, a
# cold `cargo build --release --locked -p stack-backup` in a fresh target
# dir under /usr/bin/time (wall, user+sys CPU, peak RSS), the binary's size
# (as built and stripped), and the median wall time of 3 first backups of a
# fixed directory workload into an empty local repository.
#
#   bash bench/profiles.sh                 # build and bench every variant below
#   bash bench/profiles.sh build thin      # only build (figures, binary kept in the work dir)
#   bash bench/profiles.sh bench default thin # only bench binaries built before
#
# Variants (cargo --config overrides of [profile.release]):
#   default   what Cargo.toml sets (decision 0051: codegen-units = 1,
#             no LTO; measured as `cgu1` before it was chosen)
#   cgu16     codegen-units = 16 (cargo's default, the `default` of the
#             measurement in docs/benchmarks.md)
#   thin      lto = "thin"
#   fat1      lto = "fat", codegen-units = 1
#
# Environment:
#   SB_PROFILES_DIR   work dir (default /var/tmp/stack-backup-profiles); each
#                     variant's target dir is made and deleted in it
#   SB_PROFILES_MIB   size of the workload's large file (default 512)
#   SB_NICE           nice level of the builds (default 10: the machine is shared)
#   SB_KEEP_TARGET=1  keep the target dirs (default: deleted, ~3 GB each)
# Output: one line per variant built (also in $SB_PROFILES_DIR/build-VARIANT)
# and one per variant benched. The backups run after the builds, rounds
# interleaved across variants, so a busy machine weighs on all alike.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
W=${SB_PROFILES_DIR:-/var/tmp/stack-backup-profiles}
MIB=${SB_PROFILES_MIB:-512}
say() { printf '[profiles] %s\n' "$*" >&2; }

overrides() {
  case "$1" in
    default) ;;
    cgu16) echo "--config profile.release.codegen-units=16" ;;
    thin) echo "--config profile.release.lto=\"thin\"" ;;
    fat1) echo "--config profile.release.lto=\"fat\" --config profile.release.codegen-units=1" ;;
    *) say "unknown variant $1"; exit 2 ;;
  esac
}

# A fixed workload: one large file (half random, half repetitive text, so
# chunking, hashing and zstd all work) and 3000 small files.
workload() {
  [ -f "$W/data/.done" ] && return
  rm -rf "$W/data"; mkdir -p "$W/data/small"
  python3 - "$W/data" "$MIB" <<'PY'
import os, random, sys
d, mib = sys.argv[1], int(sys.argv[2])
r = random.Random(18)
line = b"".join(b"%08d customer order shipped to warehouse %d\n" % (i, i % 97) for i in range(4096))
with open(os.path.join(d, "large.bin"), "wb") as f:
    for i in range(mib):
        f.write(r.randbytes(1 << 20) if i % 2 else (line * 16)[: 1 << 20])
for i in range(3000):
    with open(os.path.join(d, "small", "f%05d.txt" % i), "wb") as f:
        f.write(r.randbytes(r.randrange(200, 20000)))
PY
  touch "$W/data/.done"
}

bench_backup() { # BIN -> one first backup's wall seconds
  local bin=$1 run="$W/run.$$"
  rm -rf "$run"; mkdir -p "$run"
  printf 'bench-password\n' > "$run/key"
  cat > "$run/stack-backup.toml" <<TOML
[stack]
name = "profiles"
min-free-space = "64MiB"

[repository]
path = "$run/repo"
password-file = "$run/key"

[paths.data]
path = "$W/data"
TOML
  (cd "$run" && "$bin" --no-progress -q init >/dev/null)
  { /usr/bin/time -f '%e' "$bin" --config "$run/stack-backup.toml" --no-progress -q backup >/dev/null; } 2>&1 | tail -1
  rm -rf "$run"
}

build() { # VARIANT: cold build, figures to $W/build-VARIANT, binary to $W/stack-backup-VARIANT
  local variant=$1 tgt="$W/target-$1" wall user sys rss size ssize
  rm -rf "$tgt"
  say "$variant: cold build ($(uptime | sed 's/.*load/load/'))"
  # shellcheck disable=SC2046
  CARGO_TARGET_DIR="$tgt" nice -n "${SB_NICE:-10}" /usr/bin/time -f '%e %U %S %M' -o "$W/time-$variant" \
    cargo build --release --locked --quiet -p stack-backup $(overrides "$variant")
  read -r wall user sys rss < "$W/time-$variant"
  cp "$tgt/release/stack-backup" "$W/stack-backup-$variant"
  size=$(stat -c %s "$W/stack-backup-$variant")
  strip -o "$W/stripped-$variant" "$W/stack-backup-$variant"
  ssize=$(stat -c %s "$W/stripped-$variant"); rm -f "$W/stripped-$variant"
  printf '%s\tbuild_wall=%ss\tbuild_cpu=%ss\trustc_peak_rss=%sKiB\tsize=%s\tstripped=%s\n' \
    "$variant" "$wall" "$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.1f", u + s }')" "$rss" "$size" "$ssize" | tee "$W/build-$variant"
  [ "${SB_KEEP_TARGET:-0}" = 1 ] || rm -rf "$tgt"
}

bench() { # VARIANT...: 3 rounds, variants interleaved; the median per variant
  local round v
  workload
  for round in 1 2 3; do
    for v in "$@"; do
      say "$v: backup, round $round"
      bench_backup "$W/stack-backup-$v" >> "$W/backup-$v.$$"
    done
  done
  for v in "$@"; do
    printf '%s\tbackup_median=%ss\t(%s)\n' "$v" "$(sort -n "$W/backup-$v.$$" | sed -n 2p)" \
      "$(tr '\n' ' ' < "$W/backup-$v.$$")"
    rm -f "$W/backup-$v.$$"
  done
}

mkdir -p "$W"
mode=all
case "${1:-}" in build|bench) mode=$1; shift ;; esac
variants=("$@"); [ ${#variants[@]} -gt 0 ] || variants=(default cgu16 thin fat1)
for v in "${variants[@]}"; do overrides "$v" >/dev/null; done
# GNU time, not the shell keyword: the builds' CPU and peak RSS, and the
# backups' wall time, come from its -f/-o.
[ -x /usr/bin/time ] || { say "needs /usr/bin/time (Debian: apt-get install time)"; exit 2; }
command -v strip >/dev/null || { say "needs strip (binutils)"; exit 2; }
if [ "$mode" != bench ]; then for v in "${variants[@]}"; do build "$v"; done; fi
if [ "$mode" != build ]; then bench "${variants[@]}"; fi
