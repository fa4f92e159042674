#!/usr/bin/env bash
# Install Debian's Chromium for the headless browser tests (tests/e2e/test_models_page.py).
#
# A no-op when `chromium` is already on PATH. Otherwise installs the `chromium` package with
# apt-get (needs root; apt reaches Debian's packages). Chromium is never downloaded by the
# tests themselves: browser builds from anywhere but Debian's packages are not reachable here.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  echo "chromium present: $(chromium --version 2>/dev/null || echo 'version unknown')"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "chromium is missing and installing it needs root: run 'sudo $0'" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends: the browser and its libraries, not the desktop extras it recommends.
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "installed: $(chromium --version)"
