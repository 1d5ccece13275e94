# Shared by the bench scripts (sourced after scripts/services.sh; the caller
# defines `say`).

# GNU time (`/usr/bin/time -f`) measures each command's peak RSS.
ensure_gnu_time() {
  [ -x /usr/bin/time ] && return 0
  say "installing GNU time"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null; }
}

# The stack-backup binary measured: SB_BIN when set, else a release build of
# this checkout, built (or brought up to date) here. Benchmarks measure what
# users install; the dev profile the tests share keeps debug assertions and
# overflow checks. Sets SB_BIN.
ensure_sb_bin() {
  if [ -z "${SB_BIN:-}" ]; then
    say "building target/release/stack-backup (a no-op when it is up to date)"
    cargo build --release --locked -q -p stack-backup >&2 || return 1
    SB_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/stack-backup"
  fi
}

# The cargo profile SB_BIN was built with, for the results.
sb_profile() {
  case "$SB_BIN" in
    */release/*) echo release ;;
    */debug/*)
      if grep -A3 '^\[profile.dev\]' "$ROOT/Cargo.toml" | grep -q '^opt-level *= *[23]'; then
        echo dev-optimised
      else
        echo debug
      fi ;;
    *) echo unknown ;;
  esac
}

# The pgbench of the server's major version (else the newest installed);
# needs psql_admin. Sets PGBENCH.
find_pgbench() {
  local major
  major=$(psql_admin -tAc 'SHOW server_version_num' | awk '{ print int($1 / 10000) }')
  if [ -x "/usr/lib/postgresql/$major/bin/pgbench" ]; then
    PGBENCH="/usr/lib/postgresql/$major/bin/pgbench"
  else
    PGBENCH=$(ls -d /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -1)
  fi
  [ -n "$PGBENCH" ] && [ -x "$PGBENCH" ]
}

# write_bench_config FILE STACK-NAME FILES-DIR: stack-backup's config for a
# bench stack — the database at $PG_DB_URL (password in $BENCH/db.password),
# the images in IMAGES, one directory — with its repository $SB_REPO and key
# $BENCH/sb.key (made here, 0600).
write_bench_config() {
  local file=$1 name=$2 files=$3 images_toml
  ( umask 077
    head -c 32 /dev/urandom | base64 > "$BENCH/sb.key"
    printf '%s\n' "$SB_PG_PASSWORD" > "$BENCH/db.password" )
  images_toml=$(printf '"%s", ' "${IMAGES[@]}"); images_toml=${images_toml%, }
  cat > "$file" <<TOML
[stack]
name = "$name"
min-free-space = "1GiB"

[repository]
path = "$SB_REPO"
password-file = "$BENCH/sb.key"

[postgres.main]
url = "$PG_DB_URL"
password-file = "$BENCH/db.password"

[docker]
images = [$images_toml]

[paths.files]
path = "$files"
TOML
}

# sb_command_for CONFIG: sets SB_CMD, stack-backup with only what its config
# says (no password or repository from the environment).
sb_command_for() {
  SB_CMD=(env -u PGPASSWORD -u RESTIC_PASSWORD -u RESTIC_REPOSITORY -u RESTIC_CACHE_DIR
    -u STACK_BACKUP_PASSWORD -u STACK_BACKUP_PASSWORD_FILE -u STACK_BACKUP_REPOSITORY
    -u STACK_BACKUP_CONFIG -u DATABASE_URL -u REDIS_URL
    XDG_CACHE_HOME="$BENCH/sb-cache" "$SB_BIN" --config "$1" --no-progress)
}
