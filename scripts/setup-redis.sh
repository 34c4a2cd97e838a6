#!/usr/bin/env bash
# Installs redis-server (Debian package) for the cluster tests and bench,
# if it is not there yet. Each test starts its own private instance.
set -euo pipefail
command -v redis-server >/dev/null && exit 0
. "$(dirname "$0")/lib/apt.sh"
echo "== installing redis-server (apt)" >&2
apt_install redis-server
# The package starts a system instance; the tests do not use it.
$SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
