#!/usr/bin/env bash
# Headless Chromium for the report's browser test (tests/report/test_report_browser.py):
# Debian's chromium + chromium-driver, installed only when missing. Called by .ci/run before the
# tests; run it by hand once on a new machine. Without root or apt it says so and returns 0:
# the browser test then skips with a message naming this script.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "[browser] chromium / chromedriver missing and no root: the browser test will skip" >&2
    exit 0
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[browser] chromium / chromedriver missing and no apt-get: the browser test will skip" >&2
  exit 0
fi
echo "[browser] installing chromium + chromium-driver (Debian packages)"
$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
  chromium chromium-driver >/dev/null || echo "[browser] install failed: the browser test will skip" >&2
exit 0
