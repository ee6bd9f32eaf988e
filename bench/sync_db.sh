#!/usr/bin/env bash
# The sync database loader's time per budgeted call on a database as large as Arch Linux's
# extra.db, in gzip, zstd, xz and plain tar (bench/sync_db_load.rs says what is measured).
#
#   bash bench/sync_db.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ((EUID == 0)); then
  bash ci/install-packages.sh tests
fi
exec cargo run --quiet --release --example sync_db_load
