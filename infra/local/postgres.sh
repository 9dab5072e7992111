#!/usr/bin/env bash
# PostgreSQL for the local stack: one cluster in .run/postgres from the
# machine's PostgreSQL binaries, listening on 127.0.0.1 only.
#
#   postgres.sh start    init (first time), start, create databases and roles
#   postgres.sh stop     fast shutdown
#   postgres.sh status   prints one line, exits 1 when not running
#   postgres.sh sql DB FILE   runs FILE as the superuser in database DB
#
# PostgreSQL refuses to run as root; when called by root the server runs as
# the `postgres` OS user and its data directory belongs to that user. When
# that user cannot reach .run/ (a clone under /root, mode 700), the cluster
# lives in /var/lib/kit-postgres/<clone> instead and .run/postgres links
# there (kit_pg_home in lib.sh); `make clean` removes both.

. "$(dirname "$0")/lib.sh"

pg_paths() {
	PG_HOME=$1
	PG_DATA=$PG_HOME/data
	PG_LOG=$PG_HOME/postgres.log
	PG_SOCKETS=$PG_HOME/sockets
}
PG_HOME=$(kit_pg_home) || exit 1
pg_paths "$PG_HOME"
PG_BIN=$(find_pg_bin) || die "$(pg_bin_missing)"

# Runs a PostgreSQL server binary as the right OS user.
as_pg_owner() {
	if is_root; then
		id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' OS user (PostgreSQL refuses root)"
		# From /: the caller's folder may be one the postgres user cannot enter.
		(cd / && runuser -u postgres -- "$@")
	else
		"$@"
	fi
}

psql_admin() {
	PGPASSWORD=$KIT_PG_SUPERUSER_PASSWORD "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 \
		-h "$KIT_PG_HOST" -p "$KIT_PG_PORT" -U postgres -d postgres "$@"
}

is_running() { [ -f "$PG_DATA/PG_VERSION" ] && as_pg_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; }

init_cluster() {
	[ -f "$PG_DATA/PG_VERSION" ] && return 0
	local home
	home=$(kit_pg_home create) || exit 1
	pg_paths "$home"
	step "initialising PostgreSQL in $PG_DATA ($("$PG_BIN/postgres" --version))"
	mkdir -p "$PG_DATA" "$PG_SOCKETS"
	local pwfile=$PG_HOME/.pwfile
	printf '%s\n' "$KIT_PG_SUPERUSER_PASSWORD" >"$pwfile"
	if is_root; then chown -R postgres: "$PG_HOME"; fi
	chmod 700 "$PG_DATA"
	chmod 600 "$pwfile"
	as_pg_owner "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --pwfile="$pwfile" \
		--auth=scram-sha-256 --encoding=UTF8 --locale=C >"$PG_HOME/initdb.log" 2>&1 ||
		die "initdb failed, see $PG_HOME/initdb.log"
	rm -f "$pwfile"
	# Local development settings; see docs/adr/0002-local-stack-without-docker.md.
	cat >>"$PG_DATA/postgresql.conf" <<EOF

# --- strangler-fig kit, local stack ---
listen_addresses = '$KIT_PG_HOST'
port = $KIT_PG_PORT
unix_socket_directories = '$PG_SOCKETS'
max_connections = 300
# A laptop stack: losing the last transactions on an OS crash is acceptable,
# slow tests are not. Never copy these three lines to production.
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
$(logical_decoding_settings)
EOF
}

# The anti-corruption layer reads the legacy database's changes through a
# logical replication slot (docs/patterns/log-tailing.md). A slot keeps WAL
# until it is read; max_slot_wal_keep_size bounds that, so a stalled ACL
# loses its slot (and says so) instead of filling the disk.
logical_decoding_settings() {
	cat <<EOF
wal_level = logical
max_replication_slots = 20
max_slot_wal_keep_size = '1GB'
# With synchronous_commit off (above), a commit reaches the slot only once
# the WAL writer flushes it: every 200 ms by default, too slow for a feed
# whose target is 100 ms from commit to publish.
wal_writer_delay = '10ms'
EOF
}

# The acl role needs REPLICATION for its logical slot, which would also let
# it open replication connections (pg_basebackup: a copy of every database).
# The slot is read over ordinary SQL, so replication connections are refused
# to it. Idempotent; reloads the server when it adds the line.
deny_acl_replication_connections() {
	local hba=$PG_DATA/pg_hba.conf rule='host replication acl all reject'
	as_pg_owner grep -q "^# kit: acl reads its slot over SQL" "$hba" && return 0
	as_pg_owner sh -c "{ printf '%s\n%s\n%s\n' '# kit: acl reads its slot over SQL; no replication connections' 'local replication acl reject' '$rule'; cat '$hba'; } > '$hba.new' && mv '$hba.new' '$hba'"
	psql_admin -c 'SELECT pg_reload_conf()' >/dev/null
}

# A cluster initialised before the ACL existed has wal_level = replica: the
# settings are added with ALTER SYSTEM and the server restarted once.
ensure_logical_decoding() {
	deny_acl_replication_connections
	local level
	level=$(psql_admin -At -c 'SHOW wal_level')
	if [ "$(psql_admin -At -c 'SHOW wal_writer_delay')" != 10ms ]; then
		psql_admin -c "ALTER SYSTEM SET wal_writer_delay = '10ms'" -c 'SELECT pg_reload_conf()' >/dev/null
	fi
	[ "$level" = logical ] && return 0
	step "enabling logical decoding (wal_level was $level; restarting PostgreSQL once)"
	psql_admin -c "ALTER SYSTEM SET wal_level = logical" \
		-c "ALTER SYSTEM SET max_replication_slots = 20" \
		-c "ALTER SYSTEM SET max_slot_wal_keep_size = '1GB'"
	as_pg_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -o "-p $KIT_PG_PORT" -m fast -w -t 60 restart >/dev/null ||
		die "PostgreSQL did not restart, see $PG_LOG"
	wait_for "PostgreSQL" 30 psql_admin -c 'SELECT 1'
}

start() {
	ensure_secrets
	init_cluster
	reserve_ports "$KIT_PG_PORT"
	if is_running; then
		say "postgres     already running on $KIT_PG_HOST:$KIT_PG_PORT"
	else
		port_open "$KIT_PG_PORT" && die "port $KIT_PG_PORT is taken by another process; set KIT_PG_PORT"
		step "starting PostgreSQL on $KIT_PG_HOST:$KIT_PG_PORT"
		# -l sends the server's output to its log file: nothing stays attached to
		# the caller's terminal or pipe.
		# The port on the command line wins over postgresql.conf's, so a
		# cluster made before a change of KIT_PORT_OFFSET moves with it.
		as_pg_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -o "-p $KIT_PG_PORT" -w -t 60 start >/dev/null ||
			die "PostgreSQL did not start, see $PG_LOG"
	fi
	mkdir -p "$KIT_LOGS"
	ln -sf "$PG_LOG" "$KIT_LOGS/postgres.log"
	wait_for "PostgreSQL" 30 psql_admin -c 'SELECT 1'
	ensure_logical_decoding
	create_databases
}

# One role and one database per component; CONNECT revoked from PUBLIC so each
# role reaches only its own database. Idempotent: safe on every `make up`.
create_databases() {
	psql_admin -c 'REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC'
	local db pw_var
	for db in $(kit_databases); do
		pw_var=KIT_DB_PASSWORD_${db^^}
		psql_admin -v role="$db" -v pw="${!pw_var}" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'role', :'pw')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'role', :'pw') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'role', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'role') \gexec
SELECT format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', :'role') \gexec
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', :'role', :'role') \gexec
SQL
	done
	# The anti-corruption layer reads the legacy change feed from a logical
	# replication slot of its own (acl/sql/legacy-access.sql says the rest).
	psql_admin -c 'ALTER ROLE acl REPLICATION' >/dev/null
}

stop() {
	if is_running; then
		step "stopping PostgreSQL"
		as_pg_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null
	fi
}

status() {
	if is_running; then
		say "postgres     running   127.0.0.1:$KIT_PG_PORT   data $PG_DATA"
	else
		say "postgres     stopped"
		return 1
	fi
}

run_sql() {
	[ -f "${2:-}" ] || die "usage: $0 sql DB FILE"
	ensure_secrets
	psql_admin -d "$1" -f "$2" >/dev/null
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
sql) run_sql "${2:-}" "${3:-}" ;;
*) die "usage: $0 start|stop|status|sql DB FILE" ;;
esac
