#!/usr/bin/env bash
# The main job end to end on a demo stack on this machine: real PostgreSQL,
# Redis and Docker Engine, a git repository and a directory, a local
# repository. Safe to run again: it rebuilds the demo stack from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

DEMO=${SB_DEMO_DIR:-/var/tmp/stack-backup-demo}
DB=sbdemo
APP_ROLE=sbdemo_app
# Drills restore into scratch databases: a role that may create them (the
# application's own may not), used by nothing else.
DRILL_ROLE=sbdemo_drill
REDIS_DB=5
IMAGE=sbdemo-web:latest
VOLUME=sbdemo_uploads

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "building stack-backup"
cargo build --locked --quiet -p stack-backup
SB="${CARGO_TARGET_DIR:-$PWD/target}/debug/stack-backup"

step "setting up the demo stack in $DEMO"
rm -rf "$DEMO"
mkdir -p "$DEMO/app/alembic/versions" "$DEMO/media" "$DEMO/image"
# PostgreSQL: the application's own role owns its database (no CREATEDB,
# not superuser: the credentials a real stack's DATABASE_URL holds), and
# creates a few tables and an Alembic revision. The superuser only makes
# the role and the empty database. The password goes through stdin and
# the environment, never argv.
APP_PW=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
DRILL_PW=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
psql -q "$SB_TEST_PG_URL" -v ON_ERROR_STOP=1 <<SQL
DROP DATABASE IF EXISTS $DB WITH (FORCE);
DROP ROLE IF EXISTS $APP_ROLE;
DROP ROLE IF EXISTS $DRILL_ROLE;
CREATE ROLE $APP_ROLE LOGIN NOCREATEDB NOCREATEROLE NOSUPERUSER PASSWORD '$APP_PW';
CREATE ROLE $DRILL_ROLE LOGIN CREATEDB NOCREATEROLE NOSUPERUSER PASSWORD '$DRILL_PW';
CREATE DATABASE $DB OWNER $APP_ROLE;
SQL
PGPASSWORD="$APP_PW" psql -q "postgres://$APP_ROLE@127.0.0.1:$SB_PG_PORT/$DB" -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE);
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers(id), total numeric(10,2), created timestamptz DEFAULT now());
INSERT INTO customers (name, email) SELECT 'customer ' || i, 'c' || i || '@example.invalid' FROM generate_series(1, 500) i;
INSERT INTO orders (customer_id, total) SELECT 1 + (i % 500), (i % 97) * 1.25 FROM generate_series(1, 5000) i;
CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
INSERT INTO alembic_version VALUES ('3f2a9c1b7d4e');
SQL
# Redis: a few keys in DB 5.
redis-cli -n "$REDIS_DB" FLUSHDB >/dev/null
for i in $(seq 1 20); do redis-cli -n "$REDIS_DB" SET "session:$i" "user-$i" >/dev/null; done
redis-cli -n "$REDIS_DB" HSET "cart:42" apples 3 pears 5 >/dev/null
# Docker: an image built on the local base image, and a named volume.
echo "demo web app v1" > "$DEMO/image/index.html"
printf 'FROM %s\nCOPY index.html /srv/index.html\nCMD ["/bin/cat", "/srv/index.html"]\n' "$SB_TEST_BASE_IMAGE" > "$DEMO/image/Dockerfile"
docker build -q -t "$IMAGE" "$DEMO/image" >/dev/null
docker volume rm -f "$VOLUME" >/dev/null 2>&1 || true
docker volume create "$VOLUME" >/dev/null
docker run --rm -v "$VOLUME:/data" "$SB_TEST_BASE_IMAGE" sh -c 'echo "avatar bytes" > /data/avatar.png; mkdir -p /data/docs; echo "invoice" > /data/docs/invoice.pdf'
# git: the application's code.
cat > "$DEMO/app/alembic/versions/3f2a9c1b7d4e_initial.py" <<'PY'
revision = "3f2a9c1b7d4e"
down_revision = None
PY
echo "print('shop')" > "$DEMO/app/app.py"
git -C "$DEMO/app" init -q -b main
git -C "$DEMO/app" add .
git -C "$DEMO/app" -c user.name=demo -c user.email=demo@example.invalid commit -q -m "demo app"
# A plain directory.
for i in $(seq 1 30); do echo "photo $i" > "$DEMO/media/photo-$i.jpg"; done

step "writing $DEMO/stack-backup.toml"
cat > "$DEMO/stack-backup.toml" <<TOML
[stack]
name = "demo"
min-free-space = "256MiB"

[repository]
path = "$DEMO/repo"
password-file = "$DEMO/repo.key"

[postgres.main]
url = "postgres://$APP_ROLE@127.0.0.1:$SB_PG_PORT/$DB"
password-file = "$DEMO/db.password"
migrations-dir = "app/alembic/versions"

[redis.cache]
url = "redis://127.0.0.1:$SB_REDIS_PORT/$REDIS_DB"
role = "data"

[docker]
images = ["$IMAGE"]
volumes = ["$VOLUME"]

[git]
path = "app"

[paths.media]
path = "media"

[retention.backups]
keep-last = 1

[drill]
postgres-url = "postgres://$DRILL_ROLE@127.0.0.1:$SB_PG_PORT/postgres"
postgres-password-file = "$DEMO/drill.password"

[[drill.check]]
name = "every customer has orders"
postgres = "main"
sql = "SELECT count(*) = 0 FROM customers c WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id)"
TOML
umask 077; printf '%s\n' "$APP_PW" > "$DEMO/db.password"; printf '%s\n' "$DRILL_PW" > "$DEMO/drill.password"; umask 022
cd "$DEMO"

step "stack-backup init --generate-password"
"$SB" init --generate-password

step "stack-backup doctor"
"$SB" doctor

step "stock restic reads the repository"
restic -r "$DEMO/repo" --password-file "$DEMO/repo.key" snapshots

step "stack-backup backup --name before-migration"
"$SB" backup --name before-migration

step "stack-backup backup (again: unchanged images and files are reused)"
"$SB" backup --name second

step "stack-backup list"
"$SB" list

step "stack-backup show before-migration"
"$SB" show before-migration

step "stock restic restores the set and sha256sum verifies it"
rm -rf "$DEMO/restored"
restic -r "$DEMO/repo" --password-file "$DEMO/repo.key" restore latest --tag name:before-migration --target "$DEMO/restored" >/dev/null
(cd "$DEMO/restored" && sha256sum -c --quiet stack-backup/CHECKSUM.sha256 && echo "all $(wc -l < stack-backup/CHECKSUM.sha256) checksums OK")

show_state() {
  printf '  orders rows:   %s\n' "$(psql -tA "${SB_TEST_PG_URL%/*}/$DB" -c 'SELECT count(*) FROM orders' 2>&1 | head -1)"
  printf '  redis keys:    %s\n' "$(redis-cli -n "$REDIS_DB" DBSIZE)"
  printf '  image:         %s\n' "$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>&1 | head -1)"
  printf '  volume file:   %s\n' "$(docker run --rm -v "$VOLUME:/data" "$SB_TEST_BASE_IMAGE" cat /data/avatar.png 2>&1)"
  printf '  media files:   %s\n' "$(ls "$DEMO/media" | wc -l)"
}

step "the demo stack now"
show_state

step "breaking it: drop a table, delete Redis keys, remove the image, change a volume file, delete photos"
psql -q "${SB_TEST_PG_URL%/*}/$DB" -c 'DROP TABLE orders'
redis-cli -n "$REDIS_DB" FLUSHDB >/dev/null
docker image rm -f "$IMAGE" >/dev/null
docker run --rm -v "$VOLUME:/data" "$SB_TEST_BASE_IMAGE" sh -c 'echo broken > /data/avatar.png'
rm -f "$DEMO"/media/photo-1*.jpg
show_state

step "stack-backup restore before-migration --dry-run"
"$SB" restore before-migration --dry-run

step "stack-backup restore before-migration --yes"
"$SB" restore before-migration --yes

step "the data is back"
show_state

step "stack-backup immaculate create --name baseline (read back in full before it counts)"
"$SB" immaculate create --name baseline
"$SB" immaculate list

step "stack-backup drill baseline (restored into scratch targets and checked; the live stack is untouched)"
"$SB" drill baseline

step "everything breaks again; stack-backup emergency --confirm --yes-i-am-sure=demo"
psql -q "${SB_TEST_PG_URL%/*}/$DB" -c 'DELETE FROM orders'
redis-cli -n "$REDIS_DB" FLUSHDB >/dev/null
show_state
"$SB" emergency --confirm --yes-i-am-sure=demo
show_state

step "stack-backup prune (the plan; nothing is removed without --apply)"
"$SB" prune

step "stack-backup export baseline, checked by hand with sha256sum"
rm -rf "$DEMO/export"
"$SB" export baseline "$DEMO/export"
(cd "$DEMO/export" && sha256sum -c --quiet CHECKSUM.sha256 && echo "all $(wc -l < CHECKSUM.sha256) checksums OK")

step "stack-backup list"
"$SB" list

printf '\ndemo finished: config %s, repository %s\n' "$DEMO/stack-backup.toml" "$DEMO/repo"
