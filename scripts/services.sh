#!/usr/bin/env bash
# Install (when missing) and run the project's local service stack on 127.0.0.1:
#   PostgreSQL 15 + TimescaleDB (Apache edition) on 55432 with a streaming standby on 55433,
#   Redis 7 on 56379, Apache Kafka (single-node KRaft) on 59092 (controller 59093).
#
# Usage: bash scripts/services.sh [start|stop|restart|status] [postgres|standby|redis|kafka ...]
#   start (default) installs what is missing, starts what is not running, leaves running services
#   alone, and writes .services/env (source it: TIMESCALEDB_URL, REDIS_URL, ...).
#   stop ends what this script started (by pid); stopping a stopped service is fine.
#
# Runtime state lives in <repo>/.services/ (git-ignored), except PostgreSQL's data directory: the
# server runs as user postgres, which must be able to traverse it, so it lives in
# /var/lib/postgresql/ingest-exporter-<hash of the repo path>/. Build caches (TimescaleDB source
# and build, Kafka jars, Maven repository) live in ${INGEST_CACHE_DIR:-/var/cache/ingest-exporter}
# so every clone on a machine shares them.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
HELPERS=$REPO/scripts/services
SERVICES_DIR=$REPO/.services
CACHE_DIR=${INGEST_CACHE_DIR:-/var/cache/ingest-exporter}
HOST=127.0.0.1

PG_PORT=55432
PG_BIN=/usr/lib/postgresql/15/bin
PG_LIBDIR=/usr/lib/postgresql/15/lib
PG_SUPERPASS=postgres
REPO_HASH=$(printf '%s' "$REPO" | sha256sum | cut -c1-12)
PG_HOME=/var/lib/postgresql/ingest-exporter-$REPO_HASH
PG_DATA=$PG_HOME/data
PG_LOG=$PG_HOME/postgres.log
TS_CONTROL=/usr/share/postgresql/15/extension/timescaledb.control

REDIS_PORT=56379
REDIS_DIR=$SERVICES_DIR/redis

KAFKA_PORT=59092
KAFKA_CONTROLLER_PORT=59093
KAFKA_VERSION=4.1.1
KAFKA_JARS=$CACHE_DIR/kafka-$KAFKA_VERSION/jars
KAFKA_DIR=$SERVICES_DIR/kafka
KAFKA_PID=$KAFKA_DIR/kafka.pid

ALL_SERVICES=(postgres standby redis kafka)
export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------------------------------------
# helpers

log() { printf 'services: %s\n' "$*"; }
die() {
    printf 'services: ERROR: %s\n' "$*" >&2
    exit 1
}
now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
since() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.1fs", e - s }'; }

usage() {
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null; }

# pid_matches PID PATTERN: the process exists and its command line contains PATTERN.
pid_matches() {
    local pid=$1 pattern=$2
    [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$pattern"
}

pid_gone() { ! pid_matches "$@"; }

read_pid() { { head -n1 "$1" 2>/dev/null || true; } | tr -d '[:space:]'; }

# wait_until SECONDS COMMAND...: poll COMMAND every 0.25 s until it succeeds or time runs out.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.25
    done
}

# stop_pid NAME PIDFILE PATTERN GRACE_SECONDS: SIGTERM, wait, then SIGKILL.
stop_pid() {
    local name=$1 pidfile=$2 pattern=$3 grace=$4 pid
    pid=$(read_pid "$pidfile")
    if [[ -z $pid ]] || ! pid_matches "$pid" "$pattern"; then
        rm -f "$pidfile"
        log "$name not running"
        return 0
    fi
    local t0
    t0=$(now)
    kill -TERM "$pid" 2>/dev/null || true
    # Not `kill -0`: an exited daemon can stay a zombie for seconds until init reaps it, and a
    # zombie's cmdline is empty, so pid_matches already counts it as gone.
    if ! wait_until "$grace" pid_gone "$pid" "$pattern"; then
        log "$name (pid $pid) ignored SIGTERM for ${grace}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_until 10 pid_gone "$pid" "$pattern" || die "$name (pid $pid) survived SIGKILL"
    fi
    rm -f "$pidfile"
    log "$name stopped ($(since "$t0"))"
}

dpkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

APT_UPDATED=0
apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    local t0
    t0=$(now)
    if ((APT_UPDATED == 0)); then
        apt-get -qq -o DPkg::Lock::Timeout=600 update
        APT_UPDATED=1
    fi
    log "apt-get install ${missing[*]}"
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null
    log "installed ${missing[*]} ($(since "$t0"))"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL + TimescaleDB

as_postgres() { runuser -u postgres -- "$@"; }

# The configured Debian mirror (first URI serving this release), for the private deb-src list.
debian_mirror() {
    local codename uri=""
    # shellcheck source=/dev/null  # a system file, not part of this repo
    codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-bookworm}")
    if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
        uri=$(awk -v want="$codename" '
            function flush() {
                if (!found && uris != "" && (" " suites " ") ~ (" " want " ")) { print uris; found = 1 }
                uris = ""; suites = ""
            }
            /^[[:space:]]*$/ { flush(); next }
            /^URIs:/ { uris = $2 }
            /^Suites:/ { $1 = ""; suites = $0 }
            END { flush() }' /etc/apt/sources.list.d/*.sources)
    fi
    if [[ -z $uri ]] && compgen -G '/etc/apt/sources.list*' >/dev/null; then
        uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            awk -v want="$codename" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                                      if ($(i + 1) == want) { print $i; exit } }')
    fi
    printf '%s' "${uri:-http://deb.debian.org/debian}"
}

timescaledb_installed() { [[ -f $TS_CONTROL && -f $PG_LIBDIR/timescaledb.so ]]; }

# Build Debian trixie's timescaledb source package against PostgreSQL 15 (bookworm has no
# binary package). A private apt configuration fetches the source; /etc/apt is left untouched.
build_timescaledb() {
    local work=$CACHE_DIR/timescaledb apt_dir=$CACHE_DIR/apt-trixie src
    if [[ ! -f $work/.source-ready ]]; then
        local mirror t0
        t0=$(now)
        mirror=$(debian_mirror)
        rm -rf "$work" && mkdir -p "$work" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
        printf 'deb-src %s trixie main\n' "$mirror" >"$apt_dir/sources.list"
        local apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
            -o APT::Sandbox::User=root)
        log "timescaledb: fetching the trixie source package from $mirror"
        apt-get -qq "${apt_opts[@]}" update
        (cd "$work" && apt-get -qq "${apt_opts[@]}" source timescaledb >"$work/source.log" 2>&1) ||
            die "timescaledb: apt-get source failed; see $work/source.log"
        touch "$work/.source-ready"
        log "timescaledb: source ready ($(since "$t0"))"
    fi
    src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'timescaledb-*' | head -n1)
    [[ -n $src ]] || die "timescaledb: no unpacked source under $work (delete it and retry)"
    if [[ ! -f $src/build/.built ]]; then
        local t0
        t0=$(now)
        log "timescaledb: building $(basename "$src") (log: $src/build.log)"
        # Out of the git tree on purpose: its cmake runs `git describe` in the enclosing repo.
        (
            cd "$src"
            cmake -S . -B build -DPG_CONFIG="$PG_BIN/pg_config" -DAPACHE_ONLY=1 -DUSE_TELEMETRY=OFF \
                -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF -DCMAKE_BUILD_TYPE=Release
            make -C build -j"$(nproc)"
        ) >"$src/build.log" 2>&1 || die "timescaledb: build failed; see $src/build.log"
        touch "$src/build/.built"
        log "timescaledb: built ($(since "$t0"))"
    fi
    make -C "$src/build" install >"$src/install.log" 2>&1 ||
        die "timescaledb: make install failed; see $src/install.log"
}

ensure_timescaledb() {
    timescaledb_installed && return 0
    local t0
    t0=$(now)
    log "timescaledb: not installed for PostgreSQL 15; building it"
    apt_install postgresql-server-dev-15 libssl-dev cmake dpkg-dev make gcc
    mkdir -p "$CACHE_DIR"
    (
        flock -w 1800 8 || die "timescaledb: timed out waiting for $CACHE_DIR/timescaledb.lock"
        timescaledb_installed || build_timescaledb
    ) 8>"$CACHE_DIR/timescaledb.lock"
    timescaledb_installed || die "timescaledb: still missing after the build ($TS_CONTROL)"
    log "timescaledb: installed ($(since "$t0"))"
}

pg_pid() { read_pid "$PG_DATA/postmaster.pid"; }
pg_alive() {
    local pid
    pid=$(pg_pid)
    [[ -n $pid ]] && pid_matches "$pid" "$PG_BIN/postgres -D $PG_DATA"
}
pg_ready() { "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PG_PORT" -t 2; }

pg_write_config() {
    cat >"$PG_DATA/ingest-exporter.conf" <<EOF
# Written by scripts/services.sh on every start; edit that script, not this file.
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = '$PG_HOME'
max_connections = 200
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
fsync = off
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = '256MB'
hot_standby = on
password_encryption = 'scram-sha-256'
EOF
    cat >"$PG_DATA/pg_hba.conf" <<EOF
# Written by scripts/services.sh. TCP on loopback only, password (SCRAM) for every role.
# TYPE  DATABASE     USER      ADDRESS        METHOD
local   all          postgres                 peer
local   replication  postgres                 peer
local   all          all                      scram-sha-256
host    all          all       127.0.0.1/32   scram-sha-256
host    replication  all       127.0.0.1/32   scram-sha-256
EOF
    chown postgres:postgres "$PG_DATA/ingest-exporter.conf" "$PG_DATA/pg_hba.conf"
}

pg_init() {
    install -d -o postgres -g postgres -m 0755 /var/lib/postgresql
    install -d -o postgres -g postgres -m 0700 "$PG_HOME"
    printf '%s\n' "$REPO" >"$PG_HOME/repo-path" # which clone owns this instance
    local t0 pwfile=$PG_HOME/.pwfile
    t0=$(now)
    (umask 077 && printf '%s\n' "$PG_SUPERPASS" >"$pwfile")
    chown postgres:postgres "$pwfile"
    as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --pwfile="$pwfile" -E UTF8 \
        --locale=C.UTF-8 --auth-local=peer --auth-host=scram-sha-256 >"$PG_HOME/initdb.log" 2>&1 ||
        die "postgres: initdb failed; see $PG_HOME/initdb.log"
    rm -f "$pwfile"
    printf "\ninclude = 'ingest-exporter.conf'\n" >>"$PG_DATA/postgresql.conf"
    log "postgres: initialised $PG_DATA ($(since "$t0"))"
}

pg_psql() {
    PGPASSWORD=$PG_SUPERPASS PGOPTIONS='-c client_min_messages=warning' \
        "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$PG_PORT" -U postgres "$@"
}

pg_bootstrap() {
    pg_psql -d postgres >/dev/null <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ingest') THEN
        CREATE ROLE ingest LOGIN;
    END IF;
    -- A password no ordinary word contains: the exporter masks known secrets everywhere.
    ALTER ROLE ingest PASSWORD 'local-dev-pw';
END
$$;
GRANT pg_monitor TO ingest;
SELECT 'CREATE DATABASE ingest OWNER ingest'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'ingest')\gexec
SQL
    pg_psql -d ingest -c 'CREATE EXTENSION IF NOT EXISTS timescaledb' >/dev/null
}

start_postgres() {
    local t0
    t0=$(now)
    [[ -x $PG_BIN/postgres ]] || apt_install postgresql-15
    ensure_timescaledb
    if pg_alive; then
        wait_until 30 pg_ready || die "postgres: pid $(pg_pid) is alive but $HOST:$PG_PORT does not answer; see $PG_LOG"
        pg_bootstrap || die "postgres: bootstrap SQL failed"
        log "postgres already running on $HOST:$PG_PORT (pid $(pg_pid))"
        return 0
    fi
    port_open "$PG_PORT" && die "postgres: port $PG_PORT is taken by a process this script did not start"
    [[ -f $PG_DATA/PG_VERSION ]] || pg_init
    pg_write_config
    ln -sfn "$PG_LOG" "$SERVICES_DIR/postgres.log" # the log lives beside the data, owned by postgres
    # 9>&-: the daemons must not inherit (and so hold forever) this script's lock descriptor.
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 30 start >/dev/null 9>&- ||
        die "postgres: did not start; see $PG_LOG"
    wait_until 30 pg_ready || die "postgres: not answering on $HOST:$PG_PORT after 30s; see $PG_LOG"
    pg_bootstrap || die "postgres: bootstrap SQL failed; see $PG_LOG"
    log "postgres up on $HOST:$PG_PORT (pid $(pg_pid), data $PG_DATA) ($(since "$t0"))"
}

stop_postgres() {
    if ! pg_alive; then
        log "postgres not running"
        return 0
    fi
    local t0
    t0=$(now)
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null ||
        as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 30 stop >/dev/null ||
        die "postgres: did not stop; see $PG_LOG"
    log "postgres stopped ($(since "$t0"))"
}

status_postgres() {
    if pg_alive && pg_ready; then
        log "postgres running on $HOST:$PG_PORT (pid $(pg_pid), data $PG_DATA)"
    else
        log "postgres stopped"
        return 1
    fi
}

# shellcheck source=scripts/services/standby.sh
. "$HELPERS/standby.sh"

# ---------------------------------------------------------------------------------------------
# Redis

redis_pid() { read_pid "$REDIS_DIR/redis.pid"; }
redis_alive() {
    local pid
    pid=$(redis_pid)
    [[ -n $pid ]] && pid_matches "$pid" "redis-server"
}
redis_ready() { [[ $(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

start_redis() {
    local t0
    t0=$(now)
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        apt_install redis-server redis-tools
    fi
    if redis_alive; then
        wait_until 30 redis_ready || die "redis: pid $(redis_pid) is alive but does not answer; see $REDIS_DIR/redis.log"
        log "redis already running on $HOST:$REDIS_PORT (pid $(redis_pid))"
        return 0
    fi
    port_open "$REDIS_PORT" && die "redis: port $REDIS_PORT is taken by a process this script did not start"
    mkdir -p "$REDIS_DIR"
    rm -f "$REDIS_DIR/redis.pid"
    redis-server --port "$REDIS_PORT" --bind "$HOST" --daemonize yes --save "" --appendonly no \
        --dir "$REDIS_DIR" --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" 9>&- ||
        die "redis: redis-server failed to start; see $REDIS_DIR/redis.log"
    wait_until 30 redis_ready || die "redis: not answering on $HOST:$REDIS_PORT after 30s; see $REDIS_DIR/redis.log"
    wait_until 5 redis_alive || true # the daemonised child writes its pid file just after binding
    log "redis up on $HOST:$REDIS_PORT (pid $(redis_pid)) ($(since "$t0"))"
}

stop_redis() { stop_pid redis "$REDIS_DIR/redis.pid" redis-server 15; }

status_redis() {
    if redis_alive && redis_ready; then
        log "redis running on $HOST:$REDIS_PORT (pid $(redis_pid))"
    else
        log "redis stopped"
        return 1
    fi
}

# ---------------------------------------------------------------------------------------------
# Kafka

java_major() { java -version 2>&1 | awk -F'"' '/version/ { split($2, v, "."); print v[1]; exit }'; }

ensure_kafka_jars() {
    [[ -f $KAFKA_JARS/.complete ]] && return 0
    command -v java >/dev/null || apt_install openjdk-17-jre-headless
    (($(java_major) >= 17)) || die "kafka: Kafka $KAFKA_VERSION needs Java 17+, found $(java_major)"
    command -v mvn >/dev/null || apt_install maven
    mkdir -p "$CACHE_DIR/kafka-$KAFKA_VERSION"
    (
        flock -w 900 8 || die "kafka: timed out waiting for the jar download lock"
        [[ -f $KAFKA_JARS/.complete ]] && exit 0
        local t0 tmp=$KAFKA_JARS.tmp
        t0=$(now)
        log "kafka: resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION from Maven Central"
        rm -rf "$tmp"
        mvn -q -B -f "$HELPERS/kafka-pom.xml" -Dmaven.repo.local="$CACHE_DIR/m2" \
            -Dkafka.version="$KAFKA_VERSION" -Doutput.dir="$tmp" dependency:copy-dependencies \
            >"$CACHE_DIR/kafka-$KAFKA_VERSION/mvn.log" 2>&1 ||
            die "kafka: jar download failed; see $CACHE_DIR/kafka-$KAFKA_VERSION/mvn.log"
        touch "$tmp/.complete"
        rm -rf "$KAFKA_JARS" && mv "$tmp" "$KAFKA_JARS"
        log "kafka: $(find "$KAFKA_JARS" -name '*.jar' | wc -l) jars in $KAFKA_JARS ($(since "$t0"))"
    ) 8>"$CACHE_DIR/kafka-$KAFKA_VERSION/.lock"
}

kafka_write_config() {
    mkdir -p "$KAFKA_DIR/data" "$KAFKA_DIR/logs"
    cat >"$KAFKA_DIR/server.properties" <<EOF
# Written by scripts/services.sh on every start; edit that script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
log.segment.bytes=67108864
EOF
}

KAFKA_JVM_OPTS=(-Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true)
kafka_java() {
    java "${KAFKA_JVM_OPTS[@]}" -Dlog4j2.configurationFile="$HELPERS/kafka-log4j2.xml" \
        -Dkafka.logs.dir="$KAFKA_DIR/logs" -cp "$KAFKA_JARS/*" "$@"
}

kafka_format() {
    [[ -f $KAFKA_DIR/data/meta.properties ]] && return 0
    local t0 cluster_id
    t0=$(now)
    # A Kafka Uuid: 16 random bytes, URL-safe base64 without padding, not starting with '-'.
    cluster_id=$(python3 -c 'import base64, uuid
while True:
    s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not s.startswith("-"):
        print(s)
        break')
    kafka_java kafka.tools.StorageTool format --config "$KAFKA_DIR/server.properties" \
        --cluster-id "$cluster_id" --standalone >"$KAFKA_DIR/logs/format.log" 2>&1 ||
        die "kafka: storage format failed; see $KAFKA_DIR/logs/format.log"
    log "kafka: formatted $KAFKA_DIR/data (cluster $cluster_id) ($(since "$t0"))"
}

kafka_pid() { read_pid "$KAFKA_PID"; }
kafka_alive() {
    local pid
    pid=$(kafka_pid)
    [[ -n $pid ]] && pid_matches "$pid" "kafka.Kafka $KAFKA_DIR/server.properties"
}
kafka_ready() { python3 "$HELPERS/kafka_ready.py" "$HOST" "$KAFKA_PORT" 2; }

kafka_wait_ready() {
    local deadline=$((SECONDS + 60))
    until kafka_ready >/dev/null 2>&1; do
        kafka_alive || die "kafka: broker exited during startup; see $KAFKA_DIR/logs/server.log and $KAFKA_DIR/logs/kafka.out"
        ((SECONDS < deadline)) ||
            die "kafka: no metadata answer on $HOST:$KAFKA_PORT after 60s; see $KAFKA_DIR/logs/server.log"
        sleep 0.25
    done
}

start_kafka() {
    local t0
    t0=$(now)
    ensure_kafka_jars
    if kafka_alive; then
        kafka_wait_ready
        log "kafka already running on $HOST:$KAFKA_PORT (pid $(kafka_pid))"
        return 0
    fi
    port_open "$KAFKA_PORT" && die "kafka: port $KAFKA_PORT is taken by a process this script did not start"
    port_open "$KAFKA_CONTROLLER_PORT" &&
        die "kafka: port $KAFKA_CONTROLLER_PORT is taken by a process this script did not start"
    kafka_write_config
    kafka_format
    rm -f "$KAFKA_PID"
    # The inner shell records its own pid and then becomes the JVM, so the pid file is right
    # whether or not setsid had to fork. setsid detaches the broker from this shell's session.
    # shellcheck disable=SC2016  # $$ and $@ belong to the inner shell
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$KAFKA_PID" \
        java "${KAFKA_JVM_OPTS[@]}" -Dlog4j2.configurationFile="$HELPERS/kafka-log4j2.xml" \
        -Dkafka.logs.dir="$KAFKA_DIR/logs" -cp "$KAFKA_JARS/*" \
        kafka.Kafka "$KAFKA_DIR/server.properties" \
        </dev/null >>"$KAFKA_DIR/logs/kafka.out" 2>&1 9>&- &
    wait_until 10 test -s "$KAFKA_PID" || die "kafka: launcher did not record a pid; see $KAFKA_DIR/logs/kafka.out"
    wait_until 10 kafka_alive || die "kafka: broker exited at once; see $KAFKA_DIR/logs/kafka.out"
    kafka_wait_ready
    log "kafka up on $HOST:$KAFKA_PORT (pid $(kafka_pid), Kafka $KAFKA_VERSION) ($(since "$t0"))"
}

stop_kafka() { stop_pid kafka "$KAFKA_PID" "kafka.Kafka $KAFKA_DIR/server.properties" 45; }

status_kafka() {
    if kafka_alive && kafka_ready >/dev/null 2>&1; then
        log "kafka running on $HOST:$KAFKA_PORT (pid $(kafka_pid), Kafka $KAFKA_VERSION)"
    else
        log "kafka stopped"
        return 1
    fi
}

# ---------------------------------------------------------------------------------------------

write_env() {
    local tmp=$SERVICES_DIR/env.tmp pg_home=$PG_HOME pg_data=$PG_DATA running
    # The primary on $PG_PORT may belong to another clone of the repo: name its real directory.
    running=$(pg_data_dir_of "$PG_PORT")
    if [[ -n $running ]]; then
        pg_data=$running
        pg_home=$(dirname "$running")
    fi
    cat >"$tmp" <<EOF
# Written by scripts/services.sh; source it: . .services/env
export TIMESCALEDB_URL=postgresql://ingest:local-dev-pw@$HOST:$PG_PORT/ingest
export TIMESCALE_REPLICA_URL=postgresql://ingest:local-dev-pw@$HOST:$STANDBY_PORT/ingest
export TIMESCALE_WRITE_URL='postgresql://ingest:local-dev-pw@$HOST:$PG_PORT,$HOST:$STANDBY_PORT/ingest?target_session_attrs=read-write'
export TIMESCALE_ADMIN_URL=postgresql://postgres:$PG_SUPERPASS@$HOST:$PG_PORT/ingest
export TIMESCALE_REPLICA_ADMIN_URL=postgresql://postgres:$PG_SUPERPASS@$HOST:$STANDBY_PORT/ingest
export REDIS_URL=redis://$HOST:$REDIS_PORT/0
export KAFKA_BOOTSTRAP_SERVERS=$HOST:$KAFKA_PORT
export INGEST_SERVICES_DIR=$SERVICES_DIR
export INGEST_PG_BIN=$PG_BIN
export INGEST_PG_HOME=$pg_home
export INGEST_PG_DATA=$pg_data
export INGEST_PG_STANDBY_DATA=$pg_home/standby-data
export INGEST_KAFKA_JARS=$KAFKA_JARS
export INGEST_KAFKA_VERSION=$KAFKA_VERSION
export INGEST_REDIS_SERVER=$(command -v redis-server || echo /usr/bin/redis-server)
EOF
    mv "$tmp" "$SERVICES_DIR/env"
}

main() {
    local cmd=${1:-start}
    (($#)) && shift
    case $cmd in
    start | stop | restart | status) ;;
    -h | --help | help)
        usage
        return 0
        ;;
    *)
        usage >&2
        return 2
        ;;
    esac
    local names=("$@") name
    ((${#names[@]})) || names=("${ALL_SERVICES[@]}")
    for name in "${names[@]}"; do
        [[ " ${ALL_SERVICES[*]} " == *" $name "* ]] || die "unknown service '$name' (expected: ${ALL_SERVICES[*]})"
    done
    [[ $(id -u) == 0 ]] || die "run as root (it installs packages and runs PostgreSQL as user postgres)"

    if [[ $cmd == status ]]; then
        local rc=0
        for name in "${names[@]}"; do "status_$name" || rc=1; done
        return "$rc"
    fi

    mkdir -p "$SERVICES_DIR"
    exec 9>"$SERVICES_DIR/.lock"
    flock -w 900 9 || die "another services.sh holds $SERVICES_DIR/.lock"
    local t0
    t0=$(now)
    if [[ $cmd == stop || $cmd == restart ]]; then
        local i
        for ((i = ${#names[@]} - 1; i >= 0; i--)); do "stop_${names[i]}"; done
    fi
    if [[ $cmd == start || $cmd == restart ]]; then
        for name in "${names[@]}"; do "start_$name"; done
        write_env
        log "ready: ${names[*]} ($(since "$t0")); env: . $SERVICES_DIR/env"
    fi
}

main "$@"
