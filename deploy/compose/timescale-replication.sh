#!/bin/bash
# Runs once in the primary's first start (docker-entrypoint-initdb.d): a replication role
# and a pg_hba line letting the standby container stream WAL.
set -euo pipefail
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" \
    -c "CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD 'local-replication-pw'"
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
