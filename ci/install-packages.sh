#!/usr/bin/env bash
# Installs the Debian packages of ci/debian-packages.txt that are not installed yet.
#
#   ci/install-packages.sh [SECTION...]          install what is missing (root only); with no
#                                                SECTION, every section the test suite uses
#                                                (all but [bench])
#   ci/install-packages.sh --list [SECTION...]   print the package names, one a line
#   ci/install-packages.sh --missing [SECTION...] print the names not installed; exit 1 if any
#
# A package counts as installed when dpkg-query reports its status as "install ok installed".
set -euo pipefail

list_file="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/debian-packages.txt"
suite_sections=(base tests pacman7 packaging cross)

mode=install
case ${1-} in
  --list) mode=list; shift ;;
  --missing) mode=missing; shift ;;
  -h | --help)
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
    exit 0
    ;;
esac
sections=("$@")
((${#sections[@]})) || sections=("${suite_sections[@]}")

# The names in the wanted sections, in file order, each once.
packages=()
for section in "${sections[@]}"; do
  grep -qx "\[$section\]" "$list_file" || { echo "install-packages: no section [$section] in $list_file" >&2; exit 2; }
  while read -r name; do
    [[ " ${packages[*]} " == *" $name "* ]] || packages+=("$name")
  done < <(awk -v s="[$section]" '
    /^\[/ { inside = ($0 == s); next }
    inside { sub(/#.*/, ""); if (NF) print $1 }' "$list_file")
done

if [[ $mode == list ]]; then
  printf '%s\n' "${packages[@]}"
  exit 0
fi

missing=()
for name in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$name" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$name")
done

if [[ $mode == missing ]]; then
  ((${#missing[@]})) && printf '%s\n' "${missing[@]}"
  ((${#missing[@]} == 0))
  exit
fi

((${#missing[@]})) || exit 0
if ((EUID != 0)); then
  echo "install-packages: not root; missing Debian packages: ${missing[*]}" >&2
  exit 1
fi
echo "install-packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
