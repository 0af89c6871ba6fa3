#!/usr/bin/env bash
# Make sure PostgreSQL server binaries (initdb, pg_ctl, postgres) are installed.
#
# tests/lab/services start their own throwaway cluster through
# msctl.local.postgres.LocalPostgres, so this script only installs the
# binaries; it never creates or starts the system cluster. Idempotent.
# The search matches LocalPostgres.find_binaries(): the pg_ctl on PATH, else the
# newest /usr/lib/postgresql/<version>/bin.
set -euo pipefail

has_server_binaries() {
    [ -x "$1/initdb" ] && [ -x "$1/pg_ctl" ] && [ -x "$1/postgres" ]
}

find_binaries() {
    local ctl dir
    if ctl=$(command -v pg_ctl 2>/dev/null); then
        for dir in "$(dirname "$(readlink -f "$ctl")")" "$(dirname "$ctl")"; do
            if has_server_binaries "$dir"; then
                echo "$dir"
                return 0
            fi
        done
    fi
    while read -r dir; do
        if [ -n "$dir" ] && has_server_binaries "$dir"; then
            echo "$dir"
            return 0
        fi
    done < <(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r)
    return 1
}

if dir=$(find_binaries); then
    echo "postgres.sh: PostgreSQL server binaries found in $dir"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "postgres.sh: PostgreSQL is not installed and apt-get is unavailable;" \
        "install it (e.g. 'brew install postgresql' on macOS)" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# Debian's postgresql-common would create and start a "main" cluster on 5432;
# the tests need only the binaries.
conf=/etc/postgresql-common/createcluster.conf
if ! grep -Eq '^[[:space:]]*create_main_cluster[[:space:]]*=' "$conf" 2>/dev/null; then
    $SUDO mkdir -p "$(dirname "$conf")"
    echo "create_main_cluster = false" | $SUDO tee -a "$conf" >/dev/null
fi

echo "postgres.sh: installing PostgreSQL server binaries with apt-get"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql

if ! dir=$(find_binaries); then
    echo "postgres.sh: apt-get installed postgresql but no server binaries were found" >&2
    exit 1
fi
echo "postgres.sh: PostgreSQL server binaries installed in $dir"
