#!/usr/bin/env bash
# Install the peer exporters `make bench` measures beside ours (Debian packages).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
missing=()
command -v prometheus-postgres-exporter >/dev/null || missing+=(prometheus-postgres-exporter)
command -v prometheus-redis-exporter >/dev/null || missing+=(prometheus-redis-exporter)
if ((${#missing[@]})); then
    echo "bench-tools: installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's packages start nothing here (no init); the bench starts its own on loopback ports.
echo "bench-tools: $(prometheus-postgres-exporter --version 2>&1 | head -n1)"
echo "bench-tools: $(prometheus-redis-exporter --version 2>&1 | head -n1)"
