#!/usr/bin/env bash
# Installs (on a fresh Debian machine, as root) and starts what stack-backup's
# tests and demo need: PostgreSQL, Redis, a Docker Engine, restic, an
# S3-compatible server (moto), a tiny local base image, and the tools that
# build the Debian package and install it into a clean Debian root
# (dpkg-dev, debootstrap, man-db). Safe to run again: it reuses what is
# already there.
# Sourced by scripts/test.sh and scripts/demo.sh; exports SB_TEST_* variables.
set -euo pipefail

log() { printf '[services] %s\n' "$*" >&2; }

SB_PG_USER=${SB_PG_USER:-stackbackup}
# A throwaway password for the local test role; it protects nothing real.
SB_PG_PASSWORD=${SB_PG_PASSWORD:-sbtest-pw}
SB_PG_PORT=${SB_PG_PORT:-5432}
SB_REDIS_PORT=${SB_REDIS_PORT:-6379}
SB_MYSQL_PORT=${SB_MYSQL_PORT:-3306}
SB_MYSQL_ADMIN=${SB_MYSQL_ADMIN:-sbtest_admin}
# A throwaway password for the local test admin; it protects nothing real.
SB_MYSQL_ADMIN_PASSWORD=${SB_MYSQL_ADMIN_PASSWORD:-sbtest-admin-pw}
SB_BASE_IMAGE=${SB_BASE_IMAGE:-stack-backup-test-base:latest}
SB_S3_PORT=${SB_S3_PORT:-9000}
SB_S3_LOG=${SB_S3_LOG:-/var/log/moto-stack-backup.log}
# moto's server mode from PyPI, in its own virtualenv unless one is on PATH.
SB_MOTO_VENV=${SB_MOTO_VENV:-/opt/stack-backup-moto}

need_pkgs=()
command -v pg_lsclusters >/dev/null 2>&1 || need_pkgs+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
[ -x /bin/busybox ] || need_pkgs+=(busybox-static)
command -v restic >/dev/null 2>&1 || need_pkgs+=(restic)
command -v git >/dev/null 2>&1 || need_pkgs+=(git)
command -v sha256sum >/dev/null 2>&1 || need_pkgs+=(coreutils)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
command -v gcc >/dev/null 2>&1 || need_pkgs+=(gcc)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
# crates/stack-backup-core/tests/tls.rs: a TLS server and its certificates.
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
# scripts/vendor.sh rebuilds vendor/rustic_core from the crate and patches.
command -v patch >/dev/null 2>&1 || need_pkgs+=(patch)
# scripts/package.sh and tests/package.rs (scripts/debian-root.sh).
command -v dpkg-shlibdeps >/dev/null 2>&1 || need_pkgs+=(dpkg-dev)
command -v strip >/dev/null 2>&1 || need_pkgs+=(binutils)
command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
command -v man >/dev/null 2>&1 || need_pkgs+=(man-db)
# systemd-analyze checks the units in packaging/ (tests/install.rs).
command -v systemd-analyze >/dev/null 2>&1 || need_pkgs+=(systemd)
# tests/operations.rs: the status page rendered headless, the Prometheus
# file parsed by the Python client (Debian's python3 reads it).
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
[ -d /usr/lib/python3/dist-packages/prometheus_client ] || need_pkgs+=(python3-prometheus-client)
# tests/operations.rs counts the files `status` opens.
command -v strace >/dev/null 2>&1 || need_pkgs+=(strace)
# rusqlite links the system libsqlite3 (decision 0031); tests/sqlite.rs
# holds a database open with the sqlite3 shell.
[ -e /usr/include/sqlite3.h ] || need_pkgs+=(libsqlite3-dev)
command -v pkg-config >/dev/null 2>&1 || need_pkgs+=(pkg-config)
command -v sqlite3 >/dev/null 2>&1 || need_pkgs+=(sqlite3)
# tests/mysql.rs: the host's MariaDB (Debian 12: 10.11), root by socket auth.
command -v mariadbd >/dev/null 2>&1 || need_pkgs+=(mariadb-server)
command -v mariadb-dump >/dev/null 2>&1 || need_pkgs+=(mariadb-client)
if ! command -v moto_server >/dev/null 2>&1 && [ ! -x "$SB_MOTO_VENV/bin/moto_server" ]; then
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_pkgs+=(python3-venv)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

wait_for() { # wait_for WHAT SECONDS CMD...
  local what=$1 secs=$2; shift 2
  for _ in $(seq 1 "$secs"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  log "$what did not come up within ${secs}s"; return 1
}

# --- PostgreSQL ---------------------------------------------------------
if ! pg_isready -q -h 127.0.0.1 -p "$SB_PG_PORT" 2>/dev/null; then
  if ! pg_lsclusters -h | grep -q .; then
    ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
    log "creating PostgreSQL $ver cluster"
    pg_createcluster "$ver" main --port "$SB_PG_PORT" >/dev/null
  fi
  read -r ver name _ < <(pg_lsclusters -h | head -1)
  log "starting PostgreSQL $ver/$name"
  pg_ctlcluster "$ver" "$name" start || true
  wait_for PostgreSQL 60 pg_isready -q -h 127.0.0.1 -p "$SB_PG_PORT"
fi
runuser -u postgres -- psql -q -p "$SB_PG_PORT" -v ON_ERROR_STOP=1 >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$SB_PG_USER') THEN
    CREATE ROLE $SB_PG_USER LOGIN SUPERUSER PASSWORD '$SB_PG_PASSWORD';
  END IF;
END \$\$;
SQL

# --- Redis ---------------------------------------------------------------
if ! redis-cli -p "$SB_REDIS_PORT" ping >/dev/null 2>&1; then
  log "starting Redis on port $SB_REDIS_PORT"
  mkdir -p /var/lib/redis
  redis-server --port "$SB_REDIS_PORT" --bind 127.0.0.1 --daemonize yes \
    --dir /var/lib/redis --logfile /var/log/redis-stack-backup.log >/dev/null
  wait_for Redis 30 redis-cli -p "$SB_REDIS_PORT" ping
fi

# --- MariaDB ---------------------------------------------------------------
# root logs in by the unix socket only; tests make a database and an app user
# per test through it and hand the stack the app user's URL.
if ! mariadb-admin --protocol=socket ping >/dev/null 2>&1; then
  log "starting MariaDB on port $SB_MYSQL_PORT"
  install -d -o mysql -g mysql /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
  (setsid mariadbd-safe --user=mysql --port="$SB_MYSQL_PORT" --bind-address=127.0.0.1 \
    >/var/log/mariadb-stack-backup.log 2>&1 &)
  wait_for MariaDB 60 mariadb-admin --protocol=socket ping
fi
# The tests' admin-url: creates the beside databases and restore users.
mariadb --protocol=socket -e "CREATE USER IF NOT EXISTS '$SB_MYSQL_ADMIN'@'%' IDENTIFIED BY '$SB_MYSQL_ADMIN_PASSWORD';
  GRANT ALL PRIVILEGES ON *.* TO '$SB_MYSQL_ADMIN'@'%' WITH GRANT OPTION;"

# --- Docker Engine -------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  (setsid dockerd >/var/log/dockerd-stack-backup.log 2>&1 &)
  wait_for "Docker Engine" 90 docker info
fi
if ! docker image inspect "$SB_BASE_IMAGE" >/dev/null 2>&1; then
  log "importing base image $SB_BASE_IMAGE from busybox-static"
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/tmp" "$root/data"
  cp /bin/busybox "$root/bin/busybox"
  for a in sh ls cat echo sleep true mkdir rm cp sha256sum tar; do ln -s busybox "$root/bin/$a"; done
  tar -C "$root" -c . | docker import -c 'CMD ["/bin/sh"]' - "$SB_BASE_IMAGE" >/dev/null
  rm -rf "$root"
fi

# --- S3-compatible object storage (moto server) ---------------------------
if command -v moto_server >/dev/null 2>&1; then
  SB_MOTO_SERVER=$(command -v moto_server)
else
  if [ ! -x "$SB_MOTO_VENV/bin/moto_server" ]; then
    log "installing moto[server] into $SB_MOTO_VENV"
    python3 -m venv "$SB_MOTO_VENV"
    "$SB_MOTO_VENV/bin/pip" install -q 'moto[server]'
  fi
  SB_MOTO_SERVER="$SB_MOTO_VENV/bin/moto_server"
fi
# moto's dashboard page identifies it (its data.json dumps every object and
# answers 500 once a long test run has left odd ones behind).
if ! curl -sf -o /dev/null "http://127.0.0.1:$SB_S3_PORT/moto-api/" 2>/dev/null; then
  if curl -s -o /dev/null "http://127.0.0.1:$SB_S3_PORT/" 2>/dev/null; then
    log "port $SB_S3_PORT is taken by something that is not moto; set SB_S3_PORT"; exit 1
  fi
  log "starting moto S3 server on port $SB_S3_PORT (request log $SB_S3_LOG)"
  (setsid "$SB_MOTO_SERVER" -H 127.0.0.1 -p "$SB_S3_PORT" >>"$SB_S3_LOG" 2>&1 &)
  wait_for "moto S3 server" 60 curl -sf -o /dev/null "http://127.0.0.1:$SB_S3_PORT/"
fi

export SB_TEST_PG_URL="postgres://$SB_PG_USER:$SB_PG_PASSWORD@127.0.0.1:$SB_PG_PORT/postgres"
export SB_TEST_REDIS_URL="redis://127.0.0.1:$SB_REDIS_PORT/0"
export SB_TEST_MYSQL_ADMIN_URL="mysql://$SB_MYSQL_ADMIN:$SB_MYSQL_ADMIN_PASSWORD@127.0.0.1:$SB_MYSQL_PORT/mysql"
export SB_TEST_BASE_IMAGE="$SB_BASE_IMAGE"
# The database images, when scripts/test.sh (or tests/common) built them.
eval "$(bash "$(dirname "${BASH_SOURCE[0]}")/db-images.sh" --if-built)"
export SB_TEST_S3_ENDPOINT="http://127.0.0.1:$SB_S3_PORT"
export SB_TEST_S3_LOG="$SB_S3_LOG"
export SB_TEST_MOTO_SERVER="$SB_MOTO_SERVER"
# moto accepts any credentials; these are throwaway test values.
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-sbtest-access-key}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-sbtest-secret-key}
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
log "PostgreSQL, Redis, MariaDB, Docker Engine and the S3 server are up"
