#!/usr/bin/env bash
# Cross-builds flocon for the Raspberry Pi's Arch Linux ARM architectures
# (aarch64, armv7h) and runs the binaries under qemu user emulation.
#
#   ci/cross-check.sh                   build the crate for both targets (dev
#                                       profile: much faster than release's LTO)
#                                       and run "flocon --version" and
#                                       "flocon --help" of each under qemu
#   ci/cross-check.sh --toolchain-only  the same with a hello-world crate: checks
#                                       the linkers, sysroots and qemu alone
#
# Missing Debian packages (the [cross] section of ci/debian-packages.txt) are
# installed when running as root or with CI=true; missing rustup targets are added.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$top"

toolchain_only=0
case ${1-} in
  --toolchain-only) toolchain_only=1 ;;
  -h | --help)
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
    exit 0
    ;;
  '') ;;
  *)
    echo "usage: ci/cross-check.sh [--toolchain-only]" >&2
    exit 2
    ;;
esac

# rust target | C cross compiler (the linker) | qemu | sysroot for qemu -L
targets=(
  "aarch64-unknown-linux-gnu aarch64-linux-gnu-gcc qemu-aarch64 /usr/aarch64-linux-gnu"
  "armv7-unknown-linux-gnueabihf arm-linux-gnueabihf-gcc qemu-arm /usr/arm-linux-gnueabihf"
)

# --- tools ------------------------------------------------------------------
# The [cross] section of ci/debian-packages.txt: installed when root or CI=true.
if [[ ${CI-} == true || $EUID -eq 0 ]]; then
  bash ci/install-packages.sh base cross
elif ! missing=$(bash ci/install-packages.sh --missing base cross); then
  echo "missing Debian packages: ${missing//$'\n'/ }" >&2
  exit 1
fi

installed=$(rustup target list --installed)
for entry in "${targets[@]}"; do
  read -r triple _ <<<"$entry"
  grep -qx "$triple" <<<"$installed" || rustup target add "$triple"
done

# --- build and run -------------------------------------------------------------
if ((toolchain_only)); then
  crate=$(mktemp -d)
  trap 'rm -rf "$crate"' EXIT
  mkdir "$crate/src"
  printf '[package]\nname = "flocon"\nversion = "0.0.0"\nedition = "2024"\n' >"$crate/Cargo.toml"
  cat >"$crate/src/main.rs" <<'EOF'
fn main() {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let sock = std::os::unix::net::UnixDatagram::unbound().map(|_| "ok");
    println!("flocon 0.0.0 {arg} {} {sock:?}", std::env::consts::ARCH);
}
EOF
  cd "$crate"
  want_version=0.0.0
  locked=()
else
  want_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
  locked=()
  [[ -f Cargo.lock ]] && locked=(--locked)
fi

# Without a network when root, should a binary not know --version and serve.
no_net=()
((EUID == 0)) && no_net=(unshare --net --)

# The ARM daemon under qemu, on loopback only (--interface lo: no multicast
# leaves the machine): its peer server serves a 300 MiB file (offsets past
# 2^31 would break a 32-bit off_t; past 2^28 a careless usize), and its relay,
# with that same peer port as its upstream, streams it again. A sync database
# (gzip, as repo-add writes it) lists the file with its SHA-256, so the file is
# served only once the ARM build has read the database and hashed 300 MiB; a
# second file whose bytes are not its database's is never served.
smoke() {
  local triple=$1 qemu=$2 sysroot=$3 binary=$4
  local dir port local_port pid ok=0 name=smoke-1.0-1-any.pkg.tar.zst
  dir=$(mktemp -d)
  port=$((20000 + RANDOM % 20000))
  local_port=$((port + 1))
  local bad=bad-1.0-1-any.pkg.tar.zst
  mkdir "$dir/cache" "$dir/tree" "$dir/db" "$dir/db/sync"
  # Sparse, with known bytes near the end.
  truncate -s 300M "$dir/cache/$name"
  printf 'flocon-tail-marker' | dd of="$dir/cache/$name" bs=1 seek=$((300 * 1024 * 1024 - 18)) conv=notrunc status=none
  printf 'not the bytes the database lists' >"$dir/cache/$bad"
  desc() { # desc FILE SIZE SHA256
    mkdir -p "$dir/tree/${1%-any.pkg.tar.zst}"
    printf '%%FILENAME%%\n%s\n\n%%NAME%%\n%s\n\n%%VERSION%%\n1.0-1\n\n%%CSIZE%%\n%s\n\n%%SHA256SUM%%\n%s\n\n' \
      "$1" "${1%%-*}" "$2" "$3" >"$dir/tree/${1%-any.pkg.tar.zst}/desc"
  }
  desc "$name" 314572800 "$(sha256sum "$dir/cache/$name" | cut -d' ' -f1)"
  desc "$bad" 32 "$(printf 'other bytes, same length, 32 B.' | sha256sum | cut -d' ' -f1)"
  (cd "$dir/tree" && tar -czf "$dir/db/sync/core.db" -- *)
  printf '[options]\nDBPath = %s/db/\n\n[core]\nServer = http://127.0.0.1:%s\n' "$dir" "$port" >"$dir/pacman.conf"
  "$qemu" -L "$sysroot" "$binary" -c /dev/null --pacman-conf "$dir/pacman.conf" --interface lo \
    --cache-dir "$dir/cache" --port "$port" --local-port "$local_port" \
    --upstream "http://127.0.0.1:$port" >"$dir/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$local_port/status" && break
    sleep 0.1
  done
  # Served once read and hashed (404 until then).
  local code=
  for _ in $(seq 600); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -r 0-0 "http://127.0.0.1:$port/$name")
    [[ $code == 206 ]] && break
    sleep 0.2
  done
  local bad_code
  bad_code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/$bad")
  if [[ $code != 206 || $bad_code != 404 ]]; then
    echo "$triple: the verified file answered $code (want 206), the bad one $bad_code (want 404)" >&2
    cat "$dir/log" >&2
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rm -rf "$dir"
    return 1
  fi
  local tail_peer tail_relay size
  tail_peer=$(curl -s -r -18 "http://127.0.0.1:$port/$name")
  tail_relay=$(curl -s -H 'Range: bytes=314572782-' "http://127.0.0.1:$local_port/core/os/x86_64/$name")
  size=$(curl -s -o /dev/null -w '%{size_download}' "http://127.0.0.1:$local_port/core/os/x86_64/$name")
  if [[ $tail_peer == flocon-tail-marker && $tail_relay == flocon-tail-marker && $size == 314572800 ]]; then
    ok=1
  else
    echo "$triple: peer tail '$tail_peer', relay tail '$tail_relay', relayed size $size" >&2
    cat "$dir/log" >&2
  fi
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  rm -rf "$dir"
  ((ok))
}

# The ARM relay fetching a file from an https:// server on loopback (openssl
# s_server -WWW) with a certificate from a CA made here and trusted with
# --ca-file: ring's handshake, certificate check and decryption under qemu.
tls_smoke() {
  local triple=$1 qemu=$2 sysroot=$3 binary=$4
  local dir port local_port tls_port server pid ok=0 name=tls-1.0-1-any.pkg.tar.zst
  dir=$(mktemp -d)
  port=$((20000 + RANDOM % 20000))
  local_port=$((port + 1))
  tls_port=$((port + 2))
  mkdir -p "$dir/www/core/os/x86_64" "$dir/cache"
  head -c 1000000 /dev/urandom >"$dir/www/core/os/x86_64/$name"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=flocon-cross-check-ca -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$dir/ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 2 -extfile "$dir/ext" -out "$dir/server.pem" 2>/dev/null
  (cd "$dir/www" && exec openssl s_server -quiet -accept "127.0.0.1:$tls_port" \
    -cert "$dir/server.pem" -key "$dir/server.key" -WWW) >"$dir/server.log" 2>&1 &
  server=$!
  # shellcheck disable=SC2016 # $repo and $arch are flocon's template variables
  "$qemu" -L "$sysroot" "$binary" -c /dev/null --pacman-conf /nonexistent/pacman.conf --interface lo \
    --cache-dir "$dir/cache" --port "$port" --local-port "$local_port" --ca-file "$dir/ca.pem" \
    --upstream "https://127.0.0.1:$tls_port"'/$repo/os/$arch' >"$dir/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$local_port/status" && break
    sleep 0.1
  done
  curl -s -o "$dir/got" "http://127.0.0.1:$local_port/core/os/x86_64/$name"
  if cmp -s "$dir/got" "$dir/www/core/os/x86_64/$name"; then
    ok=1
  else
    echo "$triple: the file relayed from https:// differs from the server's" >&2
    cat "$dir/log" "$dir/server.log" >&2
  fi
  kill "$pid" "$server" 2>/dev/null
  wait "$pid" "$server" 2>/dev/null
  rm -rf "$dir"
  ((ok))
}

failures=0
for entry in "${targets[@]}"; do
  read -r triple linker qemu sysroot <<<"$entry"
  env_name=$(tr 'a-z-' 'A-Z_' <<<"$triple")
  export "CARGO_TARGET_${env_name}_LINKER=$linker"
  start=$SECONDS
  cargo build --quiet "${locked[@]}" --target "$triple" --bin flocon
  binary=${CARGO_TARGET_DIR:-target}/$triple/debug/flocon
  file -b "$binary" 2>/dev/null | sed "s/^/$triple: /" || true
  if version=$("${no_net[@]}" timeout 10 "$qemu" -L "$sysroot" "$binary" --version 2>&1) && [[ $version == *"$want_version"* ]]; then
    echo "$triple: flocon --version: $version"
  else
    echo "FAIL: $triple: flocon --version printed '$version', not version $want_version" >&2
    failures=$((failures + 1))
  fi
  if help=$("${no_net[@]}" timeout 10 "$qemu" -L "$sysroot" "$binary" --help 2>&1) && [[ -n $help ]]; then
    echo "$triple: flocon --help: $(wc -l <<<"$help") lines"
  else
    echo "FAIL: $triple: flocon --help failed or printed nothing: $help" >&2
    failures=$((failures + 1))
  fi
  if smoke "$triple" "$qemu" "$sysroot" "$binary"; then
    echo "$triple: serve and relay smoke test passed"
  else
    echo "FAIL: $triple: serve and relay smoke test" >&2
    failures=$((failures + 1))
  fi
  if tls_smoke "$triple" "$qemu" "$sysroot" "$binary"; then
    echo "$triple: https relay smoke test passed"
  else
    echo "FAIL: $triple: https relay smoke test" >&2
    failures=$((failures + 1))
  fi
  echo "$triple: $((SECONDS - start)) s"
done

if ((failures)); then
  echo "cross check: $failures failure(s)" >&2
  exit 1
fi
echo "cross check: all passed"
