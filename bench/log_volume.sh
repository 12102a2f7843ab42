#!/usr/bin/env bash
# Count the daemon's log lines per minute, healthy and during a Redis outage.
#
# Runs `ingest-exporter run` (default settings, default log level) against the shared local
# stack, except Redis: a private redis-server on a free port, so the outage never touches the
# shared one. Usage: . .services/env && bench/log_volume.sh [seconds-per-phase, default 120]
set -euo pipefail
phase=${1:-120}
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
redis_port=$(free_port)
web_port=$(free_port)
"$INGEST_REDIS_SERVER" --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$work" --daemonize yes --pidfile "$work/redis.pid" >/dev/null
sleep 0.5
REDIS_URL="redis://127.0.0.1:$redis_port/0" .venv/bin/ingest-exporter run \
  --web.listen-address "127.0.0.1:$web_port" --log.format json 2>"$work/log" &
daemon=$!
cleanup() {
  kill "$daemon" 2>/dev/null || true
  [ -f "$work/redis.pid" ] && kill "$(cat "$work/redis.pid")" 2>/dev/null || true
}
trap cleanup EXIT
# The first minute includes start-up lines; measure from the first ready probe cycle on.
for _ in $(seq 60); do
  curl -fs "http://127.0.0.1:$web_port/-/ready" >/dev/null && break
  sleep 1
done
sleep 5
start=$(wc -l <"$work/log")
sleep "$phase"
healthy=$(($(wc -l <"$work/log") - start))
kill "$(cat "$work/redis.pid")"
start=$(wc -l <"$work/log")
sleep "$phase"
outage=$(($(wc -l <"$work/log") - start))
per_minute() { python3 -c "print(round($1 * 60 / $phase, 1))"; }
echo "healthy: $healthy lines in ${phase}s = $(per_minute "$healthy")/min"
echo "redis down: $outage lines in ${phase}s = $(per_minute "$outage")/min"
echo "events during the outage:"
tail -n "$outage" "$work/log" | python3 -c '
import collections, json, sys
counts = collections.Counter()
for line in sys.stdin:
    try:
        e = json.loads(line)
    except ValueError:
        counts["<not json>"] += 1
        continue
    counts[(e.get("level") or e.get("log_level"), e.get("event"))] += 1
for key, n in counts.most_common():
    print(f"  {n:4d} {key}")
'
