#!/usr/bin/env bash
# Builds the Debian package of stack-backup from this workspace:
#   scripts/package.sh [--profile release|dev] [--target TRIPLE] [--out DIR] [--fast]
# prints the path of the .deb on its last line. It holds the binary
# (stripped), one man page per command, bash/zsh/fish completions, the
# example config /etc/stack-backup/stack-backup.toml (a conffile, mode 0600)
# and the systemd units of packaging/ (installed, never enabled). No
# maintainer scripts: installing or removing the package never touches a
# repository or a config (docs/decisions/0012-debian-package-and-static-binary.md).
#
# --profile dev reuses the dependencies `cargo test` already compiled (the
# test suite packages that way; dev is optimised in this workspace, see
# Cargo.toml); --target x86_64-unknown-linux-musl builds a static binary
# instead (with `rustup target add x86_64-unknown-linux-musl`, musl-tools
# and CC_x86_64_unknown_linux_musl=musl-gcc); --fast compresses with gzip
# instead of xz (a larger .deb, made in seconds instead of half a minute:
# for tests).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
target=
out=
compress=xz
while [ $# -gt 0 ]; do
  case $1 in
    --profile) profile=$2; shift 2 ;;
    --target) target=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --fast) compress=gzip; shift ;;
    *) echo "usage: scripts/package.sh [--profile release|dev] [--target TRIPLE] [--out DIR] [--fast]" >&2; exit 2 ;;
  esac
done
for tool in dpkg-deb dpkg-shlibdeps strip gzip; do
  command -v "$tool" >/dev/null 2>&1 || { echo "$tool is missing (apt-get install dpkg-dev binutils; scripts/services.sh does)" >&2; exit 2; }
done

target_dir=${CARGO_TARGET_DIR:-$PWD/target}
out=${out:-$target_dir/debian}
# The package must not carry the tests' fault-injection points, so the
# binary is built here by `cargo build` (no dev-dependency features), not
# taken from a `cargo test` run.
cargo_args=(build --locked --bin stack-backup --profile "$profile")
[ -n "$target" ] && cargo_args+=(--target "$target")
cargo "${cargo_args[@]}" >&2
profile_dir=$profile
[ "$profile" = dev ] && profile_dir=debug
[ "$profile" = test ] && profile_dir=debug
bin="$target_dir/${target:+$target/}$profile_dir/stack-backup"
[ -x "$bin" ] || { echo "no binary at $bin" >&2; exit 1; }

version=$("$bin" -V | awk '{print $2}')
deb_version="$version-1"
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/root"

install -d -m 0755 "$root/usr/bin" "$root/usr/share/man/man1" \
  "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
  "$root/usr/share/fish/vendor_completions.d" "$root/usr/lib/systemd/system" \
  "$root/usr/share/doc/stack-backup" "$root/DEBIAN"
strip --strip-unneeded -o "$root/usr/bin/stack-backup" "$bin"
chmod 0755 "$root/usr/bin/stack-backup"

# Pages and completions come from the binary itself: they match it.
"$bin" man "$stage/man" >/dev/null
for page in "$stage"/man/*.1; do
  gzip -9n <"$page" >"$root/usr/share/man/man1/$(basename "$page").gz"
done
chmod 0644 "$root"/usr/share/man/man1/*
"$bin" completions bash >"$root/usr/share/bash-completion/completions/stack-backup"
"$bin" completions zsh >"$root/usr/share/zsh/vendor-completions/_stack-backup"
"$bin" completions fish >"$root/usr/share/fish/vendor_completions.d/stack-backup.fish"

install -d -m 0700 "$root/etc/stack-backup"
install -m 0600 packaging/stack-backup.toml "$root/etc/stack-backup/stack-backup.toml"
install -m 0644 packaging/stack-backup-backup.service packaging/stack-backup-backup.timer \
  "$root/usr/lib/systemd/system/"
gzip -9n <README.md >"$root/usr/share/doc/stack-backup/README.md.gz"
cat >"$root/usr/share/doc/stack-backup/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: stack-backup

Files: *
License: MIT or Apache-2.0
Comment: The binary includes rustic_core 0.13.0 with the patches listed by
 \`stack-backup --version\`, and other crates under their own licenses
 (MIT, Apache-2.0, BSD and similar).
COPYRIGHT
chmod 0644 "$root"/usr/share/doc/stack-backup/*

# Shared-library dependencies the way Debian computes them (a static binary
# has none).
mkdir -p "$stage/debian"
printf 'Source: stack-backup\n\nPackage: stack-backup\nArchitecture: any\n' >"$stage/debian/control"
depends=$(cd "$stage" && dpkg-shlibdeps -O "root/usr/bin/stack-backup" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')

cat >"$root/DEBIAN/control" <<CONTROL
Package: stack-backup
Version: $deb_version
Architecture: $arch
Maintainer: stack-backup maintainers <root@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
${depends:+Depends: $depends
}Suggests: restic, postgresql-client, redis-tools, docker.io, git
Section: admin
Priority: optional
Description: back up and restore a whole self-hosted stack as one verified unit
 PostgreSQL, Redis, Docker images and volumes, the git commit and plain
 directories go into one backup set of a restic-format repository, which
 stock restic can read. Restores run through a safety chain (disk check,
 verify, migration check, pre-restore snapshot, restore, post-restore
 verify) and undo themselves on failure.
 .
 The systemd units stack-backup-backup.service and .timer are installed
 but not enabled.
CONTROL
echo /etc/stack-backup/stack-backup.toml >"$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root"/DEBIAN/*

mkdir -p "$out"
deb="$out/stack-backup_${deb_version}_${arch}.deb"
dpkg-deb --root-owner-group -Z"$compress" --build "$root" "$deb" >&2
echo "$deb"
