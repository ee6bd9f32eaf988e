#!/usr/bin/env bash
# Builds pacman 7 (what Arch ships; Debian bookworm has only 6.0.2) from its upstream source
# into a private prefix, and prints that prefix on the last line of its output.
#
#   ci/build-pacman7.sh [PREFIX]
#
# PREFIX defaults to $FLOCON_PACMAN7, else ~/.cache/flocon/pacman-7.0.0. A prefix that already
# holds a working bin/pacman is reused (the build takes about a minute). Nothing outside PREFIX
# and a temporary folder is touched: the machine's own packages stay bookworm's.
#
# The source is the upstream tarball that Debian's trixie source package ships, fetched by apt
# through a private configuration (a deb-src line for trixie, its own lists and cache), and
# checked against the SHA-256 below. It builds with meson against bookworm's -dev packages
# (the [pacman7] section of ci/debian-packages.txt).
set -euo pipefail

version=7.0.0
tarball=pacman-package-manager_${version}.orig.tar.xz
sha256=61cbd445d1381b4b184bc7c4e2791f07a79f0f2807b7c600399d0d08e8cd28cf

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
prefix=${1:-${FLOCON_PACMAN7:-${XDG_CACHE_HOME:-$HOME/.cache}/flocon/pacman-$version}}

if "$prefix/bin/pacman" --version 2>/dev/null | grep -q "Pacman v$version"; then
  echo "build-pacman7: using $prefix/bin/pacman"
  echo "$prefix"
  exit 0
fi

bash "$top/ci/install-packages.sh" base pacman7

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/src"
echo "deb-src http://deb.debian.org/debian trixie main" >"$work/apt/sources.list"
apt_private=(
  -o "Dir::Etc::SourceList=$work/apt/sources.list"
  -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$work/apt/lists"
  -o "Dir::Cache=$work/apt/cache"
  -o APT::Sandbox::User=root
)
echo "build-pacman7: fetching $tarball (Debian trixie's source package)"
apt-get "${apt_private[@]}" -qq update
# The .dsc and the Debian diff may be gone from the archive while the tarball is not: only the
# tarball is needed, so apt's failure is judged by the tarball's presence and checksum.
(cd "$work/src" && apt-get "${apt_private[@]}" -qq source --download-only "pacman-package-manager=$version-*" >/dev/null 2>&1) || true
if [[ ! -f $work/src/$tarball ]]; then
  (cd "$work/src" && apt-get "${apt_private[@]}" -qq source --download-only pacman-package-manager >/dev/null 2>&1) || true
fi
[[ -f $work/src/$tarball ]] || { echo "build-pacman7: apt did not fetch $tarball" >&2; exit 1; }
echo "$sha256  $work/src/$tarball" | sha256sum --check --quiet - \
  || { echo "build-pacman7: $tarball does not have the expected SHA-256" >&2; exit 1; }

tar -xJf "$work/src/$tarball" -C "$work/src"
cd "$work/src/pacman-$version"
echo "build-pacman7: meson build into $prefix"
# libalpm is linked in statically, so the private prefix needs no LD_LIBRARY_PATH.
meson setup build --prefix="$prefix" --buildtype=release -Ddefault_library=static \
  -Ddoc=disabled -Di18n=false -Dcurl=enabled -Dgpgme=enabled >"$work/meson.log" 2>&1 \
  || { tail -30 "$work/meson.log" >&2; exit 1; }
meson compile -C build >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; exit 1; }
rm -rf "$prefix"
meson install -C build --no-rebuild >"$work/install.log" 2>&1 || { tail -20 "$work/install.log" >&2; exit 1; }
"$prefix/bin/pacman" --version | grep -q "Pacman v$version" \
  || { echo "build-pacman7: the built pacman does not run" >&2; exit 1; }
echo "build-pacman7: built $prefix/bin/pacman"
echo "$prefix"
