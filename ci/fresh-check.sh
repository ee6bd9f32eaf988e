#!/usr/bin/env bash
# Proves that the README's test command sets up everything it needs on a fresh machine:
# removes what the suite installs, then runs `CI=true bash tests/run.sh` in a fresh clone of
# the committed HEAD, and passes only if that run passes. Root only; it changes the machine.
#
#   ci/fresh-check.sh [--dry-run]
#   ci/fresh-check.sh --isolated    the same inside a private mount namespace whose / is an
#                                   overlay (changes kept in memory, gone at the end): the
#                                   machine, its packages and whatever else runs on it are
#                                   left as they were; the packaging check's systemd boot is
#                                   left out there (FLOCON_NO_BOOT=1)
#
# What it removes:
# - the Debian packages of ci/debian-packages.txt that the suite installs (`apt-get purge`),
#   then the packages they alone had pulled in (`apt-get autoremove --purge`, limited to what
#   was not already removable before). Never the [base] section (the Rust toolchain's gcc and
#   libc6-dev, Debian's passwd), never a package of priority required or important, and never
#   one whose removal would take a package outside the list with it: those are named and kept.
# - pacman 7's private build (ci/build-pacman7.sh), cargo-fuzz, and the `alpm` user the
#   pacman 7 tests create.
# The Rust toolchain itself (rustup, cargo, rustc, their targets) is never touched.
# --dry-run prints what would be removed and stops.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
dry_run=0
case ${1-} in
  --dry-run) dry_run=1 ;;
  --isolated | --inside-overlay) ;;
  '') ;;
  *) echo "usage: ci/fresh-check.sh [--dry-run | --isolated]" >&2; exit 2 ;;
esac
if ((EUID != 0)); then
  echo "fresh-check: needs root (it purges packages)" >&2
  exit 2
fi

# --isolated: run this script again in a new mount namespace, chrooted into an overlay of /
# whose upper layer is a tmpfs mounted in that namespace only (so everything it changes goes
# with the namespace); /proc, /sys, /dev, /run and /tmp are the machine's own (the clone and
# its build go to /tmp, network namespaces to /run/netns). Nothing is unmounted or removed by
# hand: the mounts end with the namespace.
if [[ ${1-} == --isolated ]]; then
  # Not under /dev, /run or /tmp: those are bound into the overlay, and a layer inside them
  # would make the mount tree contain itself.
  layers=$(mktemp -d /var/tmp/flocon-fresh.XXXXXX)
  status=0
  unshare --mount --propagation private bash "${BASH_SOURCE[0]}" --inside-overlay "$layers" || status=$?
  rmdir "$layers"
  exit "$status"
fi
if [[ ${1-} == --inside-overlay ]]; then
  layers=$2
  mount -t tmpfs -o size=16g flocon-fresh "$layers"
  mkdir -p "$layers/upper" "$layers/work" "$layers/root"
  mount -t overlay overlay -o "lowerdir=/,upperdir=$layers/upper,workdir=$layers/work" "$layers/root"
  for m in /proc /sys /dev /run /tmp; do
    mount --rbind "$m" "$layers/root$m"
  done
  echo "fresh-check: inside an overlay of / (this mount namespace only)"
  echo "fresh-check: without the packaging check's systemd boot (its DynamicUser cannot be allocated in this chroot)"
  exec chroot "$layers/root" env FLOCON_NO_BOOT=1 bash "$top/ci/fresh-check.sh"
fi
if [ -n "$(git -C "$top" status --porcelain)" ]; then
  echo "fresh-check: note: uncommitted changes are not part of the check (it clones HEAD)"
fi

mapfile -t listed < <(bash "$top/ci/install-packages.sh" --list tests pacman7 packaging cross)
mapfile -t base < <(bash "$top/ci/install-packages.sh" --list base)

# The packages apt would purge along with $1.
purged_with() {
  apt-get -s purge "$1" 2>/dev/null | awk '/^Purg /{print $2}' | sed 's/:.*//'
}

purge=()
kept=()
for pkg in "${listed[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || continue
  priority=$(dpkg-query -W -f='${Priority}' "$pkg")
  if [[ " ${base[*]} " == *" $pkg "* || $priority == required || $priority == important ]]; then
    kept+=("$pkg (priority $priority)")
    continue
  fi
  outside=()
  while read -r other; do
    [[ -z $other || " ${listed[*]} " == *" $other "* ]] || outside+=("$other")
  done < <(purged_with "$pkg")
  if ((${#outside[@]})); then
    kept+=("$pkg (would remove ${outside[*]})")
  else
    purge+=("$pkg")
  fi
done

echo "fresh-check: purging ${#purge[@]} packages: ${purge[*]}"
((${#kept[@]} == 0)) || printf 'fresh-check: kept: %s\n' "${kept[@]}"
pacman7=${FLOCON_PACMAN7:-${XDG_CACHE_HOME:-$HOME/.cache}/flocon/pacman-7.0.0}
echo "fresh-check: removing $pacman7, cargo-fuzz and the alpm user"
((dry_run)) && exit 0

export DEBIAN_FRONTEND=noninteractive
removable_before=$(apt-get -s autoremove 2>/dev/null | awk '/^Remv /{print $2}' | sort)
((${#purge[@]} == 0)) || apt-get purge -y -qq "${purge[@]}" >/dev/null
mapfile -t pulled < <(comm -13 <(echo "$removable_before") \
  <(apt-get -s autoremove 2>/dev/null | awk '/^Remv /{print $2}' | sort))
if ((${#pulled[@]})); then
  echo "fresh-check: purging ${#pulled[@]} packages they had pulled in"
  apt-get purge -y -qq "${pulled[@]}" >/dev/null
fi
rm -rf "$pacman7"
cargo uninstall -q cargo-fuzz 2>/dev/null || true
userdel alpm 2>/dev/null || true

clone=$(mktemp -d)
trap 'rm -rf "$clone"' EXIT
git clone -q "$top" "$clone/flocon"
echo "fresh-check: CI=true bash tests/run.sh in a fresh clone of $(git -C "$top" rev-parse --short HEAD)"
start=$SECONDS
status=0
(cd "$clone/flocon" && CI=true bash tests/run.sh) 2>&1 | tee "$clone/run.log" || status=$?
echo "fresh-check: tests/run.sh exited $status after $((SECONDS - start)) s; its closing line:"
tail -n 1 "$clone/run.log"
exit "$status"
