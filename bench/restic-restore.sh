#!/usr/bin/env bash
# Baseline (b) of the restore benchmark: the stack back out of stock restic,
# the way a script does it, from the snapshots bench/restic-backup.sh writes
# (one per component; the newest one of each path).
#   restic-restore.sh PG_BASE_URL DB FILES_DIR IMAGE...
# The repository, its password and cache come from RESTIC_REPOSITORY,
# RESTIC_PASSWORD_FILE (or RESTIC_PASSWORD) and RESTIC_CACHE_DIR; the
# database password from PGPASSWORD.
#   database:  drop it, create it empty, restic dump | pg_restore --exit-on-error
#   images:    restic dump | docker load, per image
#   directory: restic restore into a staging directory beside it, then
#              rename the live one aside, rename the restored one in, delete
#              the old one
set -euo pipefail
pg_base=$1 db=$2 files=$3
shift 3
files=${files%/}

psql -X -q -v ON_ERROR_STOP=1 -d "$pg_base/postgres" \
  -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" -c "CREATE DATABASE \"$db\""
restic dump --path /db.dump latest /db.dump | pg_restore --exit-on-error -d "$pg_base/$db"

for img in "$@"; do
  f="/${img//[:\/]/_}.tar"
  restic dump --path "$f" latest "$f" | docker load
done

staging="$files.restic-restore" old="$files.restic-old"
rm -rf "$staging" "$old"
restic restore latest --path "$files" --target "$staging"
mv "$files" "$old"
mv "$staging$files" "$files"
rm -rf "$staging" "$old"
