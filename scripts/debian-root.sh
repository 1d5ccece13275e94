#!/usr/bin/env bash
# Prints the path of a minimal Debian root filesystem of this machine's
# release (debootstrap minbase, plus man-db and bash-completion so that the
# package test can run `man` and load completions the way a user's shell
# does). No Rust toolchain is in it. Built once and cached under
# $SB_DEBIAN_ROOT_CACHE (default /var/cache/stack-backup-test); callers copy
# it before changing anything in it.
#
#   scripts/debian-root.sh [PACKAGES]
#
# PACKAGES (comma-separated) replaces the package test's list; each list
# gets a root of its own (scripts/db-images.sh makes the database images'
# root this way).
#
# The mirror is the one this machine's apt already uses (sources.list,
# sources.list.d/*.list or deb822 *.sources), so no host name is written
# down anywhere.
set -euo pipefail

log() { printf '[debian-root] %s\n' "$*" >&2; }

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$codename" ] || { log "no VERSION_CODENAME in /etc/os-release"; exit 2; }
cache=${SB_DEBIAN_ROOT_CACHE:-/var/cache/stack-backup-test}
# What the package test needs beside the package's own dependencies: man
# and completion to check those files, and the shared libraries the binary
# links (dpkg -i installs no dependencies; an apt source would need the
# network inside the root).
packages=${1:-man-db,bash-completion,libsqlite3-0}
case "$packages" in *[!a-z0-9.+,-]*) log "not a package list: $packages"; exit 2 ;; esac
# A root made with another package list is not this one.
root="$cache/debian-$codename-minbase-$(printf '%s' "$packages" | sha256sum | cut -c1-8)"

# The first `deb` source of the release itself (not -updates, -security).
mirror_of() {
  local suite=$1 f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v s="$suite" '
      $1 == "deb" {
        i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i + 1) == s) { print $i; exit }
      }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v s="$suite" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " s " ") && enabled != "no" && uris != "") {
          split(uris, u, " "); print u[1]; found = 1
        }
        types = suites = uris = enabled = ""
      }
      /^#/ { next }
      /^[ \t]*$/ { flush(); if (found) exit; next }
      { key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, "")
        if (key == "types") types = $0; else if (key == "suites") suites = $0
        else if (key == "uris") uris = $0; else if (key == "enabled") enabled = tolower($0) }
      END { if (!found) flush() }' "$f"
  done
}

mkdir -p "$cache"
exec 9>"$cache/.debian-root.lock"
flock 9
if [ ! -f "$root/.complete" ]; then
  mirror=$(mirror_of "$codename" | head -1)
  [ -n "$mirror" ] || { log "no apt source for $codename in /etc/apt"; exit 2; }
  command -v debootstrap >/dev/null 2>&1 || { log "debootstrap is missing (scripts/services.sh installs it)"; exit 2; }
  log "debootstrap --variant=minbase $codename into $root (once; cached)"
  rm -rf "$root.tmp"
  # The log names packages, not the mirror: it stays in /etc/apt only.
  if ! debootstrap --variant=minbase --include="$packages" "$codename" "$root.tmp" "$mirror" 2>&1 \
    | sed "s|$mirror|<apt mirror>|g" >"$cache/debootstrap.log"; then
    tail -20 "$cache/debootstrap.log" >&2; log "debootstrap failed (log: $cache/debootstrap.log)"; exit 1
  fi
  # The downloaded .debs are not part of a clean machine; nor is the mirror
  # (nothing in the tests installs from it): not in the sources, the
  # package lists named after it, or debootstrap's log in the root.
  rm -f "$root.tmp"/var/cache/apt/archives/*.deb "$root.tmp/var/log/bootstrap.log"
  find "$root.tmp/var/lib/apt/lists" -maxdepth 1 -type f -delete
  : >"$root.tmp/etc/apt/sources.list"
  touch "$root.tmp/.complete"
  mv "$root.tmp" "$root"
fi
echo "$root"
