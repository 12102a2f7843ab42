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
    # make test runs as root (scripts/services.sh needs it); a non-root run may use sudo.
    apt=(apt-get -qq -o DPkg::Lock::Timeout=600)
    if [[ $(id -u) != 0 ]]; then
        sudo -n true 2>/dev/null || {
            echo "tools: ERROR: run as root (or with sudo) to apt-get install ${missing[*]}" >&2
            exit 1
        }
        apt=(sudo -n DEBIAN_FRONTEND=noninteractive "${apt[@]}")
    fi
    "${apt[@]}" update
    # Several entries may name one package; apt-get takes each once.
    "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's package starts nothing here, but stop its default service if some init did.
echo "tools: $(prometheus --version 2>&1 | head -n1)"
echo "tools: $(chromium --version 2>/dev/null | head -n1)"
