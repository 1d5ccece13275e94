#!/usr/bin/env bash
# Baseline (a): the plain script people run today, one full copy per run.
#   plain-backup.sh OUT_DIR PG_URL FILES_DIR IMAGE...
# Writes db.dump.gz (pg_dump -Fc | gzip), one <image>.tar.gz per image
# (docker save | gzip), files.tar.gz (tar | gzip) and CHECKSUM (sha256sum)
# into OUT_DIR, which must not exist. The database password comes from
# PGPASSWORD in the environment, never from argv.
set -euo pipefail
out=$1 pg_url=$2 files=$3
shift 3
mkdir "$out"
cd "$out"
pg_dump -Fc -d "$pg_url" | gzip > db.dump.gz
for img in "$@"; do
  docker save "$img" | gzip > "${img//[:\/]/_}.tar.gz"
done
tar -C "$files" -c . | gzip > files.tar.gz
sha256sum -- *.gz > CHECKSUM
