#!/usr/bin/env bash
# The browser test's Chromium (Debian's package; Playwright never downloads a browser here), called by setup.sh.
# Root with apt: installed. Otherwise nothing is installed, and the browser test skips with one line saying how to
# install it (under CI, where the CI variable is set, it fails instead: CI must run it).
set -euo pipefail
if command -v chromium >/dev/null; then
  echo "setup: chromium for the browser test: $(command -v chromium)"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup: installing Debian's chromium for the browser test (apt-get install chromium; a minute or two)"
  apt-get update -qq
  apt-get install -y -qq chromium
else
  echo "setup: no chromium, so the browser test will skip; to run it: sudo apt-get install chromium"
fi
