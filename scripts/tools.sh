#!/usr/bin/env bash
# Install the Debian packages the end-to-end tests use: Prometheus (with promtool).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v promtool >/dev/null || missing+=(prometheus)
if ((${#missing[@]})); then
    echo "tools: installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# Debian's package starts nothing here, but stop its default service if some init did.
echo "tools: $(prometheus --version 2>&1 | head -n1)"
