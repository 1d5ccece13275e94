#!/usr/bin/env bash
# vendor/rustic_core is pristine rustic_core 0.13.0 plus vendor/patches/*.patch
# applied in filename order (docs/decisions/0009-vendored-crate-as-patches.md);
# vendor/rustic_backend is pristine rustic_backend 0.7.0 plus
# vendor/patches/rustic_backend/*.patch (docs/decisions/0027).
#
#   scripts/vendor.sh apply   rebuild vendor/rustic_core and vendor/rustic_backend
#                             from the pristine crates and the patches
#                             (keeps rustic_core's Cargo.lock)
#   scripts/vendor.sh check   rebuild into a temporary directory and diff them
#                             against vendor/; non-zero on a diff
#   scripts/vendor.sh lock    regenerate vendor/rustic_core/Cargo.lock (for the
#                             crate's own tests), seeded from the workspace's
#                             Cargo.lock so that the two share versions
#
# "Pristine" is the published .crate (sha256 below), less
# .cargo_vcs_info.json (upstream's commit id) and upstream's Cargo.lock
# (ours replaces it). Cargo's unpack marker .cargo-ok is not part of it.
# The crate comes from cargo's registry cache; when it is not there, cargo
# fetches it (a throwaway manifest and `cargo fetch`), so this works offline
# once the crate has been downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

die() { echo "vendor.sh: $*" >&2; exit 1; }

# select NAME: the crate the functions below work on.
select_crate() {
  CRATE="$1"
  case "$CRATE" in
    rustic_core)
      VERSION=0.13.0
      SHA256=ddab48a7f892b4943d9bffe7be44746c443982ae06ffcc3b2be55b31999b1725
      PATCHES=vendor/patches ;;
    rustic_backend)
      VERSION=0.7.0
      SHA256=a0a52bffdb1a55a66f08cfc91f87ad928e502444e94ea88fce1c48c58ead909d
      PATCHES=vendor/patches/rustic_backend ;;
    *) die "unknown crate $CRATE" ;;
  esac
  VENDOR="vendor/$CRATE"
}
CRATES=(rustic_core rustic_backend)

# The .crate file in cargo's registry cache, fetched by cargo if missing.
crate_file() {
  local f
  for f in "$CARGO_HOME"/registry/cache/*/"$CRATE-$VERSION.crate"; do
    [ -f "$f" ] && { echo "$f"; return; }
  done
  echo "vendor.sh: $CRATE $VERSION is not in the cargo cache; cargo fetch" >&2
  rm -rf "$TMP/fetch"
  mkdir -p "$TMP/fetch/src"
  : >"$TMP/fetch/src/lib.rs"
  cat >"$TMP/fetch/Cargo.toml" <<EOF
[package]
name = "vendor-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
$CRATE = "=$VERSION"
EOF
  local host
  host="$(rustc -vV | sed -n 's/^host: //p')"
  cargo fetch --quiet --manifest-path "$TMP/fetch/Cargo.toml" --target "$host" >&2
  for f in "$CARGO_HOME"/registry/cache/*/"$CRATE-$VERSION.crate"; do
    [ -f "$f" ] && { echo "$f"; return; }
  done
  die "cargo fetch did not leave $CRATE-$VERSION.crate in $CARGO_HOME/registry/cache"
}

# build DIR: pristine crate plus the patches, in DIR (which must not exist).
build() {
  local dir="$1" crate sum p
  command -v patch >/dev/null || die "patch is not installed (apt-get install patch)"
  crate="$(crate_file)"
  sum="$(sha256sum "$crate" | cut -d' ' -f1)"
  [ "$sum" = "$SHA256" ] || die "$crate: sha256 $sum, expected $SHA256"
  mkdir -p "$TMP/unpack"
  tar -xzf "$crate" -C "$TMP/unpack"
  mv "$TMP/unpack/$CRATE-$VERSION" "$dir"
  rm -f "$dir/.cargo_vcs_info.json" "$dir/Cargo.lock" "$dir/.cargo-ok"
  for p in $(LC_ALL=C ls "$PATCHES"/*.patch); do
    patch -p1 --batch --forward --fuzz=0 --no-backup-if-mismatch --quiet \
      -d "$dir" -i "$PWD/$p" || die "$p does not apply"
  done
}

case "${1:-}" in
  apply)
    for c in "${CRATES[@]}"; do
      select_crate "$c"
      build "$TMP/$CRATE"
      [ -f "$VENDOR/Cargo.lock" ] && cp "$VENDOR/Cargo.lock" "$TMP/$CRATE/Cargo.lock"
      rm -rf "$VENDOR"
      cp -a "$TMP/$CRATE" "$VENDOR"
      echo "vendor.sh: $VENDOR = $CRATE $VERSION + $(ls "$PATCHES"/*.patch | wc -l) patches"
    done
    ;;
  check)
    for c in "${CRATES[@]}"; do
      select_crate "$c"
      build "$TMP/$CRATE"
      # Cargo.lock is ours (see `lock`); `cargo test --locked` checks it. A
      # target/ left by a cargo run in the crate is not part of the tree.
      if ! diff -ruN -x Cargo.lock -x target "$TMP/$CRATE" "$VENDOR" >"$TMP/diff"; then
        sed -e "s#$TMP/$CRATE#(upstream + patches)#" "$TMP/diff"
        echo "vendor.sh: $VENDOR differs from $CRATE $VERSION + $PATCHES (above);" \
          "make the change a patch, or run scripts/vendor.sh apply" >&2
        exit 1
      fi
      echo "vendor.sh: $VENDOR = $CRATE $VERSION + $(ls "$PATCHES"/*.patch | wc -l) patches"
    done
    ;;
  lock)
    # Only rustic_core's unit tests run (scripts/test.sh); rustic_backend is
    # built as part of the workspace, whose Cargo.lock covers it.
    select_crate rustic_core
    cp Cargo.lock "$VENDOR/Cargo.lock"
    # Keeps the workspace's versions; adds the dev-dependencies, drops the rest.
    (cd "$VENDOR" && cargo metadata --format-version 1 >/dev/null)
    ;;
  *)
    echo "usage: scripts/vendor.sh apply|check|lock" >&2
    exit 2
    ;;
esac
