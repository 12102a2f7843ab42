#!/usr/bin/env bash
# Install the Debian packages the end-to-end tests use: Prometheus (with promtool), and
# Chromium with its driver for the status page's browser tests (Selenium is pointed at
# /usr/bin/chromedriver, so it never downloads a driver).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v promtool >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
[[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
if ((${#missing[@]})); then
    echo "tools: installing ${missing[*]}"
    apt-get update -qq
    # Several entries may name one package; apt-get takes each once.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's package starts nothing here, but stop its default service if some init did.
echo "tools: $(prometheus --version 2>&1 | head -n1)"
echo "tools: $(chromium --version 2>/dev/null | head -n1)"
