#!/usr/bin/env bash
# Builds, once, the container images that the container tests run real
# database servers in (no registry is reachable): one root filesystem of
# this machine's Debian release with Debian's postgresql, redis-server and
# mariadb-server (scripts/debian-root.sh, debootstrap minbase), imported
# into the Docker Engine three times, each without what only the other two
# servers need, and a small image on each whose entry point behaves like
# the official image's for what the tests use:
#
#   postgres  POSTGRES_USER (default postgres), POSTGRES_PASSWORD (required),
#             POSTGRES_DB (default the user) on the first start; PGDATA
#             /var/lib/postgresql/data; password logins from any address,
#             trust on the container's own socket (as the official image)
#   redis     no password; data in /data; extra arguments go to redis-server
#   mariadb   MARIADB_DATABASE, MARIADB_USER / MARIADB_PASSWORD (all
#             privileges on that database only), MARIADB_ROOT_PASSWORD
#             (root@'%') on the first start; data in /var/lib/mysql
#
#   scripts/db-images.sh [--if-built]
#
# Prints `export NAME=IMAGE` lines for SB_TEST_PG_IMAGE, SB_TEST_REDIS_IMAGE
# and SB_TEST_MYSQL_IMAGE. The images' tag is a hash of this script and the
# package list, so an edit here builds new ones; old tags are left alone.
# With --if-built nothing is built: the lines are printed only when the
# three images exist (scripts/services.sh uses that; scripts/test.sh
# builds them).
# Passwords reach the containers through their environment only; none is
# written into an image.
set -euo pipefail

log() { printf '[db-images] %s\n' "$*" >&2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
packages=postgresql,redis-server,mariadb-server
tag=$(cat "${BASH_SOURCE[0]}" | sha256sum | cut -c1-10)
pg_image="stack-backup-test/postgres:$tag"
redis_image="stack-backup-test/redis:$tag"
mysql_image="stack-backup-test/mariadb:$tag"

have() { docker image inspect "$1" >/dev/null 2>&1; }

if [ "${1:-}" = --if-built ] && { ! have "$pg_image" || ! have "$redis_image" || ! have "$mysql_image"; }; then
  exit 0
fi

if ! have "$pg_image" || ! have "$redis_image" || ! have "$mysql_image"; then
  # Two test processes may get here at once: one builds, the other waits.
  mkdir -p /var/cache/stack-backup-test
  exec 8>/var/cache/stack-backup-test/.db-images.lock
  flock 8
fi

# One root, three imports: each image leaves out what only the others
# need, and all leave out documentation (a backup of the test project
# saves every image, so their size is test time).
common_excludes=(./usr/share/doc ./usr/share/man ./usr/share/info ./usr/share/locale ./usr/share/i18n ./var/cache/apt ./var/lib/apt/lists)
mariadb_parts=(./usr/sbin/mariadbd ./usr/bin/aria_* ./usr/bin/myisam* ./usr/bin/mariadb-* ./usr/bin/mysql* ./usr/lib/mysql ./usr/lib/libgalera* ./usr/share/mysql ./var/lib/mysql)
postgres_parts=(./usr/lib/postgresql ./usr/share/postgresql ./var/lib/postgresql ./usr/lib/x86_64-linux-gnu/libLLVM* ./usr/lib/x86_64-linux-gnu/libz3*)
import_root() { # import_root IMAGE EXCLUDED-PATHS...
  local image=$1 root; shift
  have "$image" && return 0
  root=$(bash "$here/debian-root.sh" "$packages")
  log "importing $root as $image"
  local args=() e
  for e in "${common_excludes[@]}" "$@"; do args+=("--exclude=$e"); done
  tar -C "$root" --wildcards "${args[@]}" -c . | docker import - "$image" >/dev/null
}

build() { # build IMAGE ROOT-IMAGE ENTRY-SCRIPT DOCKERFILE-LINES...
  local image=$1 root_image=$2 entry=$3 ctx; shift 3
  have "$image" && return 0
  ctx=$(mktemp -d)
  printf '%s\n' "$entry" >"$ctx/entry"
  {
    printf 'FROM %s\n' "$root_image"
    printf 'COPY entry /usr/local/bin/sb-entry\n'
    printf 'RUN chmod 755 /usr/local/bin/sb-entry\n'
    printf '%s\n' "$@"
    printf 'ENTRYPOINT ["/usr/local/bin/sb-entry"]\n'
  } >"$ctx/Dockerfile"
  log "building $image"
  # The legacy builder's deprecation notice is noise; a failure shows all.
  if ! docker build -q -t "$image" "$ctx" >"$ctx/build.log" 2>&1; then
    cat "$ctx/build.log" >&2; rm -rf "$ctx"; log "building $image failed"; return 1
  fi
  rm -rf "$ctx"
}

# Debian's install made a cluster `main` whose port was picked while the
# host's PostgreSQL held 5432 (debootstrap shares the host's network), and
# pg_wrapper would point `docker exec … pg_dump` at it: it is dropped, so
# the tools use the default port and socket, as in the official image.
# setpriv executes the server in place (no su-style parent), so the
# server is the container's PID 1 and gets docker's stop signal.
# JIT is off: the LLVM it needs is not in the image.
import_root "stack-backup-test-dbroot-postgres:$tag" "${mariadb_parts[@]}" ./usr/lib/postgresql/*/lib/bitcode ./usr/lib/postgresql/*/lib/llvmjit*
build "$pg_image" "stack-backup-test-dbroot-postgres:$tag" '#!/bin/sh
set -eu
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
data=${PGDATA:-/var/lib/postgresql/data}
user=${POSTGRES_USER:-postgres}
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
install -d -o postgres -g postgres -m 2775 /run/postgresql
if [ ! -s "$data/PG_VERSION" ]; then
  install -d -o postgres -g postgres -m 700 "$data"
  pw=$(mktemp)
  chown postgres "$pw"
  printf "%s\n" "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" >"$pw"
  as_pg "$bin/initdb" -D "$data" -U "$user" --pwfile="$pw" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pw"
  echo "host all all all scram-sha-256" >>"$data/pg_hba.conf"
  db=${POSTGRES_DB:-$user}
  if [ "$db" != postgres ]; then
    echo "CREATE DATABASE \"$db\" OWNER \"$user\";" | as_pg "$bin/postgres" --single -D "$data" postgres >/dev/null
  fi
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$bin/postgres" -D "$data" -c listen_addresses="*" -c jit=off' \
  'ENV PGDATA=/var/lib/postgresql/data' 'STOPSIGNAL SIGINT' 'EXPOSE 5432' \
  'RUN pg_lsclusters -h | while read -r v n _; do pg_dropcluster "$v" "$n"; done'

import_root "stack-backup-test-dbroot-redis:$tag" "${mariadb_parts[@]}" "${postgres_parts[@]}" ./usr/lib/x86_64-linux-gnu/libicu* ./usr/lib/x86_64-linux-gnu/perl ./usr/share/perl
build "$redis_image" "stack-backup-test-dbroot-redis:$tag" '#!/bin/sh
set -eu
install -d -o redis -g redis /data
cd /data
exec setpriv --reuid=redis --regid=redis --init-groups redis-server --bind 0.0.0.0 --protected-mode no --dir /data --daemonize no "$@"' \
  'EXPOSE 6379'

import_root "stack-backup-test-dbroot-mariadb:$tag" "${postgres_parts[@]}"
build "$mysql_image" "stack-backup-test-dbroot-mariadb:$tag" '#!/bin/sh
set -eu
data=/var/lib/mysql
install -d -o mysql -g mysql /run/mysqld
chown mysql:mysql "$data"
if [ ! -e "$data/.sb-initialised" ]; then
  [ -d "$data/mysql" ] || mariadb-install-db --user=mysql --datadir="$data" >/dev/null
  mariadbd --user=mysql --datadir="$data" --skip-networking &
  for _ in $(seq 1 60); do mariadb-admin --protocol=socket ping >/dev/null 2>&1 && break; sleep 1; done
  db=${MARIADB_DATABASE:-}
  {
    [ -z "$db" ] || printf "CREATE DATABASE IF NOT EXISTS \`%s\`;\n" "$db"
    if [ -n "${MARIADB_USER:-}" ]; then
      printf "CREATE USER \047%s\047@\047%%\047 IDENTIFIED BY \047%s\047;\n" "$MARIADB_USER" "${MARIADB_PASSWORD:?MARIADB_PASSWORD is required}"
      [ -z "$db" ] || printf "GRANT ALL PRIVILEGES ON \`%s\`.* TO \047%s\047@\047%%\047;\n" "$db" "$MARIADB_USER"
    fi
    if [ -n "${MARIADB_ROOT_PASSWORD:-}" ]; then
      printf "CREATE USER \047root\047@\047%%\047 IDENTIFIED BY \047%s\047;\n" "$MARIADB_ROOT_PASSWORD"
      printf "GRANT ALL PRIVILEGES ON *.* TO \047root\047@\047%%\047 WITH GRANT OPTION;\n"
    fi
  } | mariadb --protocol=socket
  mariadb-admin --protocol=socket shutdown
  wait
  touch "$data/.sb-initialised"
fi
exec mariadbd --user=mysql --datadir="$data" --bind-address=0.0.0.0 --skip-name-resolve' \
  'EXPOSE 3306'

printf 'export SB_TEST_PG_IMAGE=%s\nexport SB_TEST_REDIS_IMAGE=%s\nexport SB_TEST_MYSQL_IMAGE=%s\n' \
  "$pg_image" "$redis_image" "$mysql_image"
