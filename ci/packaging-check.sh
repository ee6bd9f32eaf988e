#!/usr/bin/env bash
# Checks what ships around the binary: the systemd unit, the PKGBUILDs and
# their .SRCINFO, the pacman install scriptlet, the default configuration file
# and the man page. Changes nothing in the tree unless asked to.
#
#   ci/packaging-check.sh [BINARY]          check (BINARY: the built flocon, put
#                                           in the unit's ExecStart for verify;
#                                           default target/release/flocon, else
#                                           target/debug/flocon)
#   ci/packaging-check.sh --update-srcinfo  rewrite packaging/**/.SRCINFO
#   ci/packaging-check.sh --boot [BINARY]   also boot a real systemd (root only)
#                                           in fresh pid/mount/net/cgroup
#                                           namespaces, start the unit with
#                                           BINARY, and check that it gets
#                                           READY=1, survives a reload and
#                                           stops with status 0
#
# Missing Debian packages ([tests] and [packaging] of ci/debian-packages.txt) are
# installed when running as root or with CI=true. FLOCON_SECURITY_MAX (default
# 2.5) is the highest accepted "systemd-analyze security" exposure; FLOCON_BOOT_ARGS is added to the
# daemon's command line under --boot.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$top"

unit=systemd/flocon.service
socket_unit=systemd/flocon.socket
man_page=docs/flocon.8
conf=packaging/flocon.conf
pkgbuilds=(packaging/PKGBUILD packaging/release/PKGBUILD)
security_max=${FLOCON_SECURITY_MAX:-2.5}

update_srcinfo=0
boot=0
binary=
if [[ ${1-} == --boot ]]; then
  boot=1
  shift
fi
case ${1-} in
  --update-srcinfo) update_srcinfo=1 ;;
  -h | --help)
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
    exit 0
    ;;
  '') ;;
  *) binary=$1 ;;
esac

failures=0
fail() {
  printf 'FAIL: %s\n' "$*" >&2
  failures=$((failures + 1))
}
checked=0
# Prints "ok: WHAT" when no failure came since the last call.
ok() {
  ((failures == checked)) && printf 'ok: %s\n' "$*"
  checked=$failures
}

scratch=$(mktemp -d)
boot_pid=
boot_cgroup=
cleanup() {
  if [[ -n $boot_pid ]] && kill -0 "$boot_pid" 2>/dev/null; then
    kill -KILL "$boot_pid" 2>/dev/null || true
    wait "$boot_pid" 2>/dev/null || true
  fi
  if [[ -n $boot_cgroup && -d $boot_cgroup ]]; then
    find "$boot_cgroup" -depth -type d -exec rmdir {} + 2>/dev/null || true
  fi
  rm -rf "$scratch"
}
trap cleanup EXIT
chmod 755 "$scratch"

# --- tools ------------------------------------------------------------------
# makepkg --printsrcinfo needs makepkg and pacman ([tests]); the rest is [packaging].
if [[ ${CI-} == true || $EUID -eq 0 ]]; then
  bash ci/install-packages.sh tests packaging
elif ! missing=$(bash ci/install-packages.sh --missing tests packaging); then
  echo "missing Debian packages: ${missing//$'\n'/ }" >&2
  exit 1
fi

# Runs a command as an unprivileged user: makepkg refuses to run as root.
as_user() {
  if ((EUID == 0)); then
    runuser -u nobody -- "$@"
  else
    "$@"
  fi
}

# --- .SRCINFO -----------------------------------------------------------------
for pkgbuild in "${pkgbuilds[@]}"; do
  dir=$(dirname "$pkgbuild")
  work="$scratch/srcinfo-${dir//\//-}"
  mkdir -p "$work"
  # Outside a checkout, so the -git PKGBUILD prints its published source.
  cp -L "$pkgbuild" "$dir/flocon.install" "$work/"
  ((EUID == 0)) && chown -R nobody "$work"
  if ! (unset FLOCON_GIT && cd "$work" && as_user makepkg --printsrcinfo >"$scratch/SRCINFO" 2>"$scratch/err"); then
    cat "$scratch/err" >&2
    fail "makepkg --printsrcinfo failed for $pkgbuild"
    continue
  fi
  if ((update_srcinfo)); then
    cp "$scratch/SRCINFO" "$dir/.SRCINFO"
    ok "wrote $dir/.SRCINFO"
  elif diff -u "$dir/.SRCINFO" "$scratch/SRCINFO"; then
    ok "$dir/.SRCINFO matches $pkgbuild"
  else
    fail "$dir/.SRCINFO is stale: run ci/packaging-check.sh --update-srcinfo"
  fi
done
((update_srcinfo)) && exit "$((failures > 0))"

for pkgbuild in "${pkgbuilds[@]}"; do
  bash -n "$pkgbuild" || fail "bash -n $pkgbuild"
  # SC2034/SC2154: makepkg's variables; SC2164: makepkg runs functions with errexit.
  shellcheck -s bash -e SC2034,SC2154,SC2164 "$pkgbuild" || fail "shellcheck $pkgbuild"
done
ok "PKGBUILD syntax"

# Every file package() installs from the source tree exists in this tree.
while read -r file; do
  [[ $file == target/* ]] && continue
  [[ -f $file ]] || fail "packaging/PKGBUILD installs $file, which does not exist"
done < <(sed -n 's/^ *install -Dm0[0-9]* \([^ "$]*\) .*/\1/p' packaging/PKGBUILD)
git_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
release_version=$(sed -n 's/^pkgver=//p' packaging/release/PKGBUILD)
[[ $release_version == "$git_version" ]] ||
  fail "packaging/release/PKGBUILD pkgver=$release_version, Cargo.toml version $git_version"
ok "PKGBUILD installs existing files, versions agree"

# --- install scriptlet --------------------------------------------------------
# pacman runs it with /bin/sh: keep it POSIX.
bash -n packaging/flocon.install || fail "bash -n packaging/flocon.install"
sh -n packaging/flocon.install || fail "sh -n packaging/flocon.install"
shellcheck -s sh packaging/flocon.install || fail "shellcheck packaging/flocon.install"
out=$(sh -c '. ./packaging/flocon.install && post_install')
# shellcheck disable=SC2016 # the literal pacman line
grep -qF 'Server = http://localhost:19433/$repo/os/$arch' <<<"$out" ||
  fail "post_install does not print the Server line"
ok "flocon.install"

# --- systemd unit -----------------------------------------------------------------
if [[ -z $binary ]]; then
  for candidate in target/release/flocon target/debug/flocon; do
    if [[ -x $candidate ]]; then
      binary=$candidate
      break
    fi
  done
fi
have_binary=1
if [[ -z $binary ]]; then
  echo "note: no flocon binary built; verifying the unit with /bin/true as ExecStart"
  binary=/bin/true
  have_binary=0
elif [[ ! -x $binary ]]; then
  fail "$binary is not an executable"
  binary=/bin/true
  have_binary=0
fi
binary=$(realpath "$binary")
mkdir -p "$scratch/man/man8"
cp "$man_page" "$scratch/man/man8/"
grep -q '^ExecStart=/usr/bin/flocon$' "$unit" || fail "$unit: ExecStart is not /usr/bin/flocon"
sed "s|^ExecStart=/usr/bin/flocon\$|ExecStart=$binary|" "$unit" >"$scratch/flocon.service"
cp "$socket_unit" "$scratch/flocon.socket"
# verify exits 0 on unknown keys and bad values: any message is a failure.
if ! MANPATH="$scratch/man" systemd-analyze verify "$scratch/flocon.service" "$scratch/flocon.socket" >"$scratch/verify" 2>&1 ||
  [[ -s "$scratch/verify" ]]; then
  cat "$scratch/verify" >&2
  fail "systemd-analyze verify $unit"
else
  ok "systemd-analyze verify $unit $socket_unit (ExecStart=$binary)"
fi

systemd-analyze security --offline=yes --no-pager "$unit" >"$scratch/security" 2>&1 || true
score=$(sed -n 's/.*Overall exposure level for flocon.service: \([0-9.]*\).*/\1/p' "$scratch/security")
if [[ -z $score ]]; then
  cat "$scratch/security" >&2
  fail "systemd-analyze security printed no score"
elif awk -v s="$score" -v m="$security_max" 'BEGIN { exit !(s > m) }'; then
  grep '✗' "$scratch/security" >&2 || true
  fail "systemd-analyze security: exposure $score is above $security_max"
else
  ok "systemd-analyze security: exposure $score (at most $security_max)"
fi

# --- the unit under a real systemd (--boot) -----------------------------------
# systemd runs as PID 1 of new pid, mount, net, uts, ipc and cgroup namespaces
# (it needs no systemd on the host), with a private /run, /tmp, /var/log and
# /var/cache (an empty pacman cache but for one fake package) and a veth
# interface that can multicast; nothing leaves the namespaces.
# FLOCON_BOOT_ARGS is appended to ExecStart (say "--upstream URL").
boot_check() {
  local base state i
  if [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; then
    base=/sys/fs/cgroup
  else
    base=/sys/fs/cgroup/unified
  fi
  boot_cgroup=$base/flocon-check-$$
  mkdir "$boot_cgroup"
  cat >"$scratch/boot.sh" <<'INNER'
set -e
mount --make-rprivate /
mount -t proc proc /proc
mount -t tmpfs tmpfs /run
mkdir -p /run/flocon-check /run/systemd/system
cp "$FLOCON_BINARY" /run/flocon-check/flocon
sed "s|^ExecStart=/usr/bin/flocon\$|ExecStart=/run/flocon-check/flocon $FLOCON_BOOT_ARGS|" "$FLOCON_UNIT" >/run/systemd/system/flocon.service
cp "$FLOCON_SOCKET_UNIT" /run/systemd/system/flocon.socket
printf '[Unit]\nDescription=flocon check\nWants=flocon.socket flocon.service\n' >/run/systemd/system/flocon-check.target
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /var/log
umount -l /sys/fs/cgroup 2>/dev/null || true
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
ip link add lan0 type veth peer name lan1
ip link set lan1 up
ip link set lan0 multicast on up
ip addr add 192.0.2.10/24 dev lan0
ip route add 224.0.0.0/4 dev lan0
mount -t tmpfs tmpfs /var/cache
mkdir -p /var/cache/pacman/pkg
: >/var/cache/pacman/pkg/flocon-check-1.0-1-any.pkg.tar.zst
: >/var/cache/pacman/pkg/flocon-check-1.0-1-any.pkg.tar.zst.sig
export container=flocon-check
exec /lib/systemd/systemd --system --unit=flocon-check.target --log-target=console --log-level=warning
INNER
  FLOCON_BINARY=$binary FLOCON_UNIT=$top/$unit FLOCON_SOCKET_UNIT=$top/$socket_unit \
    FLOCON_BOOT_ARGS=${FLOCON_BOOT_ARGS-} \
    CGROUP=$boot_cgroup BOOT=$scratch/boot.sh \
    bash -c 'echo $$ >"$CGROUP/cgroup.procs" && exec unshare --pid --fork --mount --net --uts --ipc --cgroup bash "$BOOT"' \
    >"$scratch/boot.log" 2>&1 &
  boot_pid=$!
  local init=
  for ((i = 0; i < 50; i++)); do
    sleep 0.2
    init=$(pgrep -P "$boot_pid" -x systemd || true)
    [[ -n $init ]] && break
  done
  if [[ -z $init ]]; then
    cat "$scratch/boot.log" >&2
    fail "--boot: systemd did not start"
    return
  fi
  # --root: the namespace's root as init sees it (also when this script runs chrooted).
  in_ns() { nsenter -t "$init" -m -p -n -u -i -C --root --wd -- "$@"; }
  unit_state() { in_ns systemctl show -P ActiveState -P SubState flocon.service 2>/dev/null | paste -sd/ || true; }
  state=
  for ((i = 0; i < 150; i++)); do
    state=$(unit_state)
    [[ $state == active/running || $state == failed/* ]] && break
    sleep 0.2
  done
  if [[ $state != active/running ]]; then
    fail "--boot: flocon.service is $state, not active/running after READY=1"
  else
    ok "--boot: flocon.service active (READY=1 received)"
    # Its TCP listeners are the ones systemd holds (flocon.socket).
    local passed=0
    for ((i = 0; i < 20 && passed < 4; i++)); do
      ((i)) && sleep 0.1
      passed=$(in_ns journalctl --no-pager -o cat -u flocon.service 2>/dev/null | grep -c 'a socket from systemd' || true)
    done
    ((passed == 4)) || fail "--boot: flocon used $passed of the 4 sockets of flocon.socket"
    ok "--boot: the TCP listeners come from flocon.socket"
    # Memory is given back once the daemon has been quiet for 10 s (src/memory/): madvise
    # and malloc_trim under the unit's system call filter and MemoryDenyWriteExecute. Read
    # VmRSS without connecting: a connection would keep the daemon busy.
    local main rss0 rss
    main=$(in_ns systemctl show -P MainPID flocon.service)
    rss0=$(in_ns grep -m1 '^VmRSS:' "/proc/$main/status" | tr -dc 0-9)
    rss=$rss0
    for ((i = 0; i < 100; i++)); do
      rss=$(in_ns grep -m1 '^VmRSS:' "/proc/$main/status" | tr -dc 0-9)
      ((rss * 10 < rss0 * 7)) && break
      sleep 0.25
    done
    if ((rss * 10 < rss0 * 7)); then
      ok "--boot: memory given back when quiet (VmRSS $rss0 -> $rss kB)"
    else
      fail "--boot: VmRSS $rss0 -> $rss kB in 25 s: memory not given back under the unit"
    fi
    in_ns systemctl reload flocon.service || fail "--boot: systemctl reload"
    sleep 1
    state=$(unit_state)
    [[ $state == active/running ]] || fail "--boot: after reload (SIGUSR2) flocon.service is $state"
    ok "--boot: reload (SIGUSR2)"
    in_ns systemctl stop flocon.service || fail "--boot: systemctl stop"
    state=$(in_ns systemctl show -P Result -P ExecMainStatus flocon.service | paste -sd/ || true)
    [[ $state == success/0 ]] || fail "--boot: stop gave result/status $state, not success/0"
    ok "--boot: stop (SIGTERM) exits 0"
    # While flocon is stopped, systemd still holds pacman's port: nobody else can take it.
    in_ns ss -Hltn 'sport = :19433' | grep -q 127.0.0.1:19433 ||
      fail "--boot: 127.0.0.1:19433 is not held while flocon.service is stopped"
    ok "--boot: flocon.socket holds 19433 while the service is stopped"
  fi
  if ((failures > checked)); then
    in_ns systemctl --no-pager status flocon.service >&2 || true
    in_ns journalctl --no-pager -u flocon.service >&2 || true
  fi
  in_ns systemctl poweroff >/dev/null 2>&1 || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$boot_pid" 2>/dev/null || break
    sleep 0.2
  done
}
if ((boot)); then
  if ((EUID != 0)); then
    fail "--boot needs root"
  elif ((!have_binary)); then
    fail "--boot needs a built flocon binary"
  else
    boot_check
  fi
fi

# --- man page and configuration file --------------------------------------
if ! groff -man -Tutf8 -ww -z "$man_page" >"$scratch/groff" 2>&1 || [[ -s "$scratch/groff" ]]; then
  cat "$scratch/groff" >&2
  fail "groff warnings in $man_page"
fi
grep -q "^\.TH FLOCON 8 [^ ]* \"flocon $git_version\"" "$man_page" ||
  fail "$man_page: .TH does not name flocon $git_version"
# Each key of the default configuration file is documented, and back.
conf_keys=$(sed -n 's/^#\([A-Z][A-Za-z]*\)\( = .*\)\{0,1\}$/\1/p' "$conf" | sort -u)
man_keys=$(sed -n 's/.*; \\fB\([A-Z][A-Za-z]*\)\( =\)\{0,1\}\\fR.*/\1/p' "$man_page" | sort -u)
if [[ $conf_keys != "$man_keys" ]]; then
  diff <(echo "$conf_keys") <(echo "$man_keys") >&2 || true
  fail "keys of $conf (<) and $man_page (>) differ"
fi
# Once the binary has a --help, every long option of the man page is in it.
# (Without a network when root, should a binary without --help start serving.)
no_net=()
((EUID == 0)) && no_net=(unshare --net --)
if ((have_binary)) && help=$("${no_net[@]}" timeout 5 "$binary" --help 2>&1) && [[ -n $help ]]; then
  options=$(sed -n '/^\.SH OPTIONS/,/^\.SH /p' "$man_page" | grep -o '\\-\\-[a-z]\+\(\\-[a-z]\+\)*' | sed 's/\\-/-/g' | sort -u)
  for option in $options; do
    grep -q -- "$option" <<<"$help" || fail "$man_page documents $option, absent from flocon --help"
  done
fi
ok "man page and $conf"

# --- the scripts themselves -------------------------------------------------
shellcheck ci/*.sh tests/run.sh bench/run.sh fuzz/run.sh .ci/run || fail "shellcheck of the scripts"

if ((failures)); then
  echo "packaging check: $failures failure(s)" >&2
  exit 1
fi
echo "packaging check: all passed"
