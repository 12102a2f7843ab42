# shellcheck shell=bash
# The local stack's streaming standby of the Timescale primary; sourced by scripts/services.sh.
#
# The standby is found through the running primary, by port, never through this clone's own
# pid files: several clones (git worktrees) share one primary on $PG_PORT, and the primary may
# have been started by another of them. Its data directory sits next to the primary's (the
# primary tells where that is), it streams through the physical replication slot
# $STANDBY_SLOT (so the primary keeps the WAL it still needs), listens on $STANDBY_PORT and has
# its own socket directory. `stop standby` keeps the slot, so a restarted standby catches up.

STANDBY_PORT=55433
STANDBY_SLOT=ingest_exporter_standby

# pg_data_dir_of PORT: the data directory of the server answering on PORT (empty if none).
pg_data_dir_of() {
    PGPASSWORD=$PG_SUPERPASS "$PG_BIN/psql" -X -q -t -A -h "$HOST" -p "$1" -U postgres -d postgres \
        -c 'SHOW data_directory' 2>/dev/null || true
}

# The primary's home (the directory holding its data directory), found by port.
standby_home() {
    local data
    data=$(pg_data_dir_of "$PG_PORT")
    [[ -n $data ]] || return 1
    dirname "$data"
}

standby_data() { printf '%s/standby-data' "$(standby_home)"; }

standby_pid() { read_pid "$1/postmaster.pid"; }

standby_alive() {
    local data=$1 pid
    pid=$(standby_pid "$data")
    [[ -n $pid ]] && pid_matches "$pid" "$PG_BIN/postgres -D $data"
}

standby_ready() { "$PG_BIN/pg_isready" -q -h "$HOST" -p "$STANDBY_PORT" -t 2; }

standby_sql() {
    PGPASSWORD=$PG_SUPERPASS PGOPTIONS='-c client_min_messages=warning' \
        "$PG_BIN/psql" -X -q -t -A -v ON_ERROR_STOP=1 -h "$HOST" -p "$1" -U postgres -d postgres -c "$2"
}

standby_streaming() {
    [[ $(standby_sql "$PG_PORT" "SELECT count(*) FROM pg_stat_replication
        WHERE application_name = '$STANDBY_SLOT' AND state = 'streaming'") == 1 ]]
}

standby_write_config() {
    local home=$1 data=$2
    # Replaces the primary's copy that came with the base backup: same settings, own port.
    cat >"$data/ingest-exporter.conf" <<EOF
# Written by scripts/services.sh (standby) on every start; edit that script, not this file.
listen_addresses = '$HOST'
port = $STANDBY_PORT
unix_socket_directories = '$home'
max_connections = 200
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
fsync = off
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = '256MB'
hot_standby = on
hot_standby_feedback = on
password_encryption = 'scram-sha-256'
EOF
    chown postgres:postgres "$data/ingest-exporter.conf"
}

standby_basebackup() {
    local home=$1 data=$2 t0
    t0=$(now)
    # A slot left by a standby whose data directory is gone would keep WAL forever: drop it.
    standby_sql "$PG_PORT" "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
        WHERE slot_name = '$STANDBY_SLOT' AND NOT active" >/dev/null
    rm -rf "$data"
    # The password reaches pg_basebackup through its environment; -R writes primary_conninfo
    # and primary_slot_name into the copy, -C -S creates the slot in the same step.
    as_postgres env PGPASSWORD="$PG_SUPERPASS" "$PG_BIN/pg_basebackup" \
        -d "host=$HOST port=$PG_PORT user=postgres application_name=$STANDBY_SLOT" \
        -D "$data" -R -C -S "$STANDBY_SLOT" -X stream --checkpoint=fast \
        >"$home/standby-basebackup.log" 2>&1 ||
        die "standby: pg_basebackup failed; see $home/standby-basebackup.log"
    log "standby: base backup of $HOST:$PG_PORT into $data ($(since "$t0"))"
}

start_standby() {
    local t0 home data
    t0=$(now)
    home=$(standby_home) || die "standby: no primary answers on $HOST:$PG_PORT (start postgres first)"
    data=$home/standby-data
    if standby_alive "$data"; then
        wait_until 30 standby_ready || die "standby: pid $(standby_pid "$data") is alive but $HOST:$STANDBY_PORT does not answer"
        log "standby already running on $HOST:$STANDBY_PORT (pid $(standby_pid "$data"))"
        return 0
    fi
    port_open "$STANDBY_PORT" && die "standby: port $STANDBY_PORT is taken by a process this script did not start"
    [[ -f $data/PG_VERSION ]] || standby_basebackup "$home" "$data"
    standby_write_config "$home" "$data"
    as_postgres "$PG_BIN/pg_ctl" -D "$data" -l "$home/standby.log" -w -t 30 start >/dev/null 9>&- ||
        die "standby: did not start; see $home/standby.log"
    wait_until 30 standby_ready || die "standby: not answering on $HOST:$STANDBY_PORT after 30s; see $home/standby.log"
    if [[ $(standby_sql "$STANDBY_PORT" 'SELECT pg_is_in_recovery()') != t ]]; then
        log "standby on $HOST:$STANDBY_PORT runs promoted (not in recovery): left as it is"
        return 0
    fi
    wait_until 30 standby_streaming || die "standby: not streaming from $HOST:$PG_PORT after 30s; see $home/standby.log"
    log "standby up on $HOST:$STANDBY_PORT, streaming through slot $STANDBY_SLOT (pid $(standby_pid "$data")) ($(since "$t0"))"
}

stop_standby() {
    local home data t0
    if ! home=$(standby_home); then
        # The primary is down: look for a standby of this machine by its port instead.
        data=$(pg_data_dir_of "$STANDBY_PORT")
        [[ -n $data ]] || {
            log "standby not running"
            return 0
        }
    else
        data=$home/standby-data
    fi
    if ! standby_alive "$data"; then
        log "standby not running"
        return 0
    fi
    t0=$(now)
    as_postgres "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null ||
        as_postgres "$PG_BIN/pg_ctl" -D "$data" -m immediate -w -t 30 stop >/dev/null ||
        die "standby: did not stop"
    log "standby stopped ($(since "$t0"))"
}

status_standby() {
    local data role
    data=$(pg_data_dir_of "$STANDBY_PORT")
    if [[ -z $data ]] || ! standby_alive "$data"; then
        log "standby stopped"
        return 1
    fi
    role=standby
    [[ $(standby_sql "$STANDBY_PORT" 'SELECT pg_is_in_recovery()') == t ]] || role="promoted (a primary now)"
    log "standby running on $HOST:$STANDBY_PORT (pid $(standby_pid "$data"), data $data): $role"
}
