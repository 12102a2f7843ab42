#!/bin/bash
# The standby container: copy the primary once with pg_basebackup -R, then run as a hot standby.
set -euo pipefail
data=/var/lib/postgresql/data
if [ ! -s "$data/PG_VERSION" ]; then
    mkdir -p "$data" && chown postgres "$data" && chmod 700 "$data"
    su-exec postgres env PGPASSWORD="$REPLICATION_PASSWORD" \
        pg_basebackup -h "$PRIMARY_HOST" -U replicator -D "$data" -R -X stream
fi
exec su-exec postgres postgres -D "$data" -c hot_standby=on
