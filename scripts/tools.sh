#!/usr/bin/env bash
# Install the Debian packages the end-to-end tests use: Prometheus (with promtool),
# Alertmanager (with amtool), and Chromium with its driver for the status page's browser tests
# (Selenium is pointed at /usr/bin/chromedriver, so it never downloads a driver).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v promtool >/dev/null || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
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
# Debian's packages start nothing here; the tests run their own instances on free ports.
echo "tools: $(prometheus --version 2>&1 | head -n1)"
echo "tools: $(prometheus-alertmanager --version 2>&1 | head -n1)"
echo "tools: $(chromium --version 2>/dev/null | head -n1)"
