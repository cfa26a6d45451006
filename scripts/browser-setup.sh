#!/usr/bin/env bash
# Installs Debian's chromium for the browser tests (tests/browser), once. Playwright, the Python package from the
# dev extra, drives it by its path; Playwright's own browser download (`playwright install`) is never used.
set -euo pipefail
CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
command -v apt-get >/dev/null || { echo "apt-get not found: install chromium at $CHROMIUM yourself" >&2; exit 1; }
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "installing chromium needs root (or sudo)" >&2; exit 1; }
  sudo=(sudo -n)
fi
echo "==> installing chromium (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >&2
"${sudo[@]}" apt-get install -y -qq chromium >&2
[ -x "$CHROMIUM" ] || { echo "chromium was installed but $CHROMIUM is missing" >&2; exit 1; }
