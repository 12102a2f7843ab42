#!/usr/bin/env bash
# Cause a Timescale failover on a local primary/standby pair: the injection command of
# `ingest-exporter drill` for the local stack (scripts/services.sh) and for the tests' private
# pairs. The exporter never stops or promotes a server itself; this script does, when asked.
#
# Usage: bash scripts/timescale-failover.sh [--primary-port N] [--standby-port N] COMMAND
#   kill          stop the primary at once (pg_ctl stop -m immediate), then promote the standby
#   switchover    stop the primary cleanly (-m fast), wait until the standby has received its
#                 shutdown checkpoint, then promote the standby (no acknowledged write is lost)
#   stop-primary  only stop the primary at once
#   promote       only promote the standby
#   partition     cut the standby's WAL stream (primary_conninfo emptied): the standby falls
#                 behind while the primary keeps acknowledging writes (asynchronous replication)
#   status        role, timeline and WAL position of both servers
#
# Servers are found by port (defaults: the local stack, 55432 and 55433) and their data
# directories asked of the servers themselves; PGPASSWORD is the superuser's password
# (default: the local stack's). Each step prints `failover: EVENT at=EPOCH_SECONDS`. Run as
# root: pg_ctl runs as user postgres.
set -euo pipefail

HOST=127.0.0.1
PG_BIN=${INGEST_PG_BIN:-/usr/lib/postgresql/15/bin}
PRIMARY_PORT=55432
STANDBY_PORT=55433
export PGPASSWORD=${PGPASSWORD:-postgres}

say() { printf 'failover: %s at=%s\n' "$1" "${EPOCHREALTIME/,/.}"; }
die() {
    printf 'failover: ERROR: %s\n' "$*" >&2
    exit 1
}

sql() {
    PGOPTIONS='-c client_min_messages=warning' "$PG_BIN/psql" -X -q -t -A -v ON_ERROR_STOP=1 \
        -h "$HOST" -p "$1" -U postgres -d postgres -c "$2"
}

data_dir() { sql "$1" 'SHOW data_directory' 2>/dev/null || true; }

pg_ctl() { runuser -u postgres -- "$PG_BIN/pg_ctl" "$@"; }

# The primary's data directory, asked before it stops (a stopped server answers nothing).
primary_data() {
    local data
    data=$(data_dir "$PRIMARY_PORT")
    [[ -n $data ]] || die "no server answers on $HOST:$PRIMARY_PORT"
    [[ $(sql "$PRIMARY_PORT" 'SELECT pg_is_in_recovery()') == f ]] ||
        die "$HOST:$PRIMARY_PORT is in recovery, not a primary"
    printf '%s' "$data"
}

standby_data() {
    local data
    data=$(data_dir "$STANDBY_PORT")
    [[ -n $data ]] || die "no server answers on $HOST:$STANDBY_PORT"
    printf '%s' "$data"
}

stop_primary() {
    local data=$1 mode=$2
    say "primary_stopping mode=$mode port=$PRIMARY_PORT"
    pg_ctl -D "$data" -m "$mode" -w -t 60 stop >/dev/null
    say primary_stopped
}

promote() {
    local data=$1
    [[ $(sql "$STANDBY_PORT" 'SELECT pg_is_in_recovery()') == t ]] ||
        die "$HOST:$STANDBY_PORT is not in recovery: nothing to promote"
    say "promoting port=$STANDBY_PORT"
    pg_ctl -D "$data" -w -t 60 promote >/dev/null
    say "promoted timeline=$(timeline "$STANDBY_PORT")"
}

timeline() {
    sql "$1" "SELECT CASE WHEN pg_is_in_recovery() THEN (pg_control_checkpoint()).timeline_id
              ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END"
}

# A clean switchover: the standby must hold the old primary's shutdown checkpoint before it
# is promoted, or acknowledged writes would be left behind.
wait_received() {
    local data=$1 checkpoint received deadline=$((SECONDS + 30))
    checkpoint=$(runuser -u postgres -- "$PG_BIN/pg_controldata" "$data" |
        awk -F': *' '/^Latest checkpoint location/ { print $2 }')
    [[ -n $checkpoint ]] || die "cannot read the stopped primary's checkpoint location"
    while :; do
        received=$(sql "$STANDBY_PORT" "SELECT coalesce(pg_last_wal_receive_lsn() >= '$checkpoint'::pg_lsn, false)")
        [[ $received == t ]] && break
        ((SECONDS < deadline)) || die "standby did not receive checkpoint $checkpoint within 30s"
        sleep 0.05
    done
    say "standby_caught_up checkpoint=$checkpoint"
}

partition() {
    say "partitioning port=$STANDBY_PORT"
    sql "$STANDBY_PORT" "ALTER SYSTEM SET primary_conninfo = ''" >/dev/null
    sql "$STANDBY_PORT" 'SELECT pg_reload_conf()' >/dev/null
    local deadline=$((SECONDS + 10))
    until [[ $(sql "$STANDBY_PORT" 'SELECT count(*) FROM pg_stat_wal_receiver') == 0 ]]; do
        ((SECONDS < deadline)) || die "the standby's WAL receiver did not stop within 10s"
        sleep 0.05
    done
    say partitioned
}

status() {
    local port role
    for port in "$PRIMARY_PORT" "$STANDBY_PORT"; do
        if [[ -z $(data_dir "$port") ]]; then
            printf 'failover: %s:%s down\n' "$HOST" "$port"
            continue
        fi
        role=primary
        [[ $(sql "$port" 'SELECT pg_is_in_recovery()') == t ]] && role=standby
        printf 'failover: %s:%s %s timeline=%s\n' "$HOST" "$port" "$role" "$(timeline "$port")"
    done
}

main() {
    local cmd=""
    while (($#)); do
        case $1 in
        --primary-port) PRIMARY_PORT=${2:-} && shift 2 ;;
        --standby-port) STANDBY_PORT=${2:-} && shift 2 ;;
        -*) die "unknown option $1" ;;
        *)
            [[ -z $cmd ]] || die "one command at a time (got $cmd and $1)"
            cmd=$1 && shift
            ;;
        esac
    done
    [[ $PRIMARY_PORT =~ ^[0-9]+$ && $STANDBY_PORT =~ ^[0-9]+$ ]] || die "ports must be numbers"
    case $cmd in
    kill)
        local primary standby
        primary=$(primary_data) && standby=$(standby_data)
        stop_primary "$primary" immediate
        promote "$standby"
        ;;
    switchover)
        local primary standby
        primary=$(primary_data) && standby=$(standby_data)
        stop_primary "$primary" fast
        wait_received "$primary"
        promote "$standby"
        ;;
    stop-primary) stop_primary "$(primary_data)" immediate ;;
    promote) promote "$(standby_data)" ;;
    partition) partition ;;
    status) status ;;
    *)
        sed -n '6,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
    esac
}

main "$@"
