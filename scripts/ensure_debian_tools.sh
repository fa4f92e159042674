#!/usr/bin/env bash
# Install the Debian tools the test suite drives (a no-op when they are present):
# - chromium: the headless browser tests (tests/e2e/test_models_page.py);
# - strace: watching the compose init scripts' command lines for secrets
#   (tests/integration/test_compose_scripts.py).
#
# Installs only what is missing, with apt-get (needs root; apt reaches Debian's packages). Chromium
# is never downloaded by the tests themselves: browser builds from anywhere but Debian's packages
# are not reachable here.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
command -v strace >/dev/null 2>&1 || missing+=(strace)
if [ "${#missing[@]}" -eq 0 ]; then
  echo "chromium present: $(chromium --version 2>/dev/null || echo 'version unknown'); strace present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "missing ${missing[*]}, and installing needs root: run 'sudo $0'" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends: the tools and their libraries, not the desktop extras they recommend.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed: ${missing[*]}"
