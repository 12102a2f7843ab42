#!/usr/bin/env bash
# Install the Debian packages the end-to-end tests use: Prometheus (with promtool) and
# Alertmanager (with amtool).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v promtool >/dev/null || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
if ((${#missing[@]})); then
    packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
    echo "tools: installing $packages"
    apt-get update -qq
    # shellcheck disable=SC2086  # one word per package
    apt-get install -y -qq --no-install-recommends $packages >/dev/null
fi
# Debian's packages start nothing here; the tests run their own instances on free ports.
echo "tools: $(prometheus --version 2>&1 | head -n1)"
echo "tools: $(prometheus-alertmanager --version 2>&1 | head -n1)"
