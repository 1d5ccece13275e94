#!/usr/bin/env bash
# Baseline (b): the same components streamed into stock restic.
#   restic-backup.sh PG_URL FILES_DIR IMAGE...
# The repository, its password and cache come from RESTIC_REPOSITORY,
# RESTIC_PASSWORD and RESTIC_CACHE_DIR; the database password from
# PGPASSWORD. One snapshot per component, as a script would do it; restic's
# own deduplication (and, for the directory, its parent snapshot) applies
# from the second run on.
set -euo pipefail
pg_url=$1 files=$2
shift 2
pg_dump -Fc -Z0 -d "$pg_url" | restic backup --stdin --stdin-filename db.dump
for img in "$@"; do
  docker save "$img" | restic backup --stdin --stdin-filename "${img//[:\/]/_}.tar"
done
restic backup "$files"
