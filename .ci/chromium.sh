#!/usr/bin/env bash
# Make sure Debian's Chromium and its chromedriver are installed, for tests/e2e/test_browser.py
# (which drives /usr/bin/chromium through /usr/bin/chromedriver and never downloads a browser).
# Idempotent.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "chromium.sh: $(/usr/bin/chromium --version 2>/dev/null) and chromedriver found"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium.sh: Chromium is not installed and apt-get is unavailable;" \
        "install chromium and chromium-driver (the browser test is skipped without them, outside CI)" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "chromium.sh: installing chromium and chromium-driver with apt-get"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    chromium chromium-driver

if ! [ -x /usr/bin/chromium ] || ! [ -x /usr/bin/chromedriver ]; then
    echo "chromium.sh: apt-get ran but /usr/bin/chromium or /usr/bin/chromedriver is missing" >&2
    exit 1
fi
echo "chromium.sh: $(/usr/bin/chromium --version 2>/dev/null) installed"
