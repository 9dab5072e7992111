#!/usr/bin/env bash
# What the local stack needs, checked before anything starts.
#
#   doctor.sh                  every check as a table (make doctor); exits 1
#                              when one fails
#   doctor.sh preflight WHAT   the checks WHAT needs (infra, up or test),
#                              silent when they pass; the first failure
#                              prints one line, the problem and its fix, and
#                              exits 1 (stack.sh and `make test` run it)
#   doctor.sh ports            every port of the stack: who holds it (make status)
#
# tests/tests/doctor.rs produces each failure on purpose.

. "$(dirname "$0")/lib.sh"

MODE=table
FAILED=0

# One result: in a table, a row; before a start, silence or the one line.
report() {
	local check=$1 state=$2 detail=$3
	if [ "$MODE" = table ]; then
		printf '%-26s %-5s %s\n' "$check" "$state" "$detail"
		[ "$state" != FAIL ] || FAILED=1
	elif [ "$state" = FAIL ]; then
		printf 'error: %s\n' "$detail" >&2
		exit 1
	fi
}

check_postgres_binaries() {
	local bin
	if bin=$(find_pg_bin) && [ -n "$bin" ]; then
		report "postgres binaries" ok "$bin ($("$bin/pg_ctl" --version 2>/dev/null))"
	else
		report "postgres binaries" FAIL "$(pg_bin_missing)"
	fi
}

check_rabbitmq() {
	local bin
	if bin=$(find_rabbit_bin); then
		report rabbitmq ok "$bin"
	elif [ -f /etc/debian_version ] && is_root && command -v apt-get >/dev/null; then
		report rabbitmq ok "not installed yet: make up installs rabbitmq-server with apt"
	else
		report rabbitmq FAIL "RabbitMQ is not installed: sudo apt-get install rabbitmq-server (macOS: brew install rabbitmq), or set RABBIT_BIN to the folder holding rabbitmq-server"
	fi
}

check_tool() {
	local tool=$1 fix=$2
	if command -v "$tool" >/dev/null 2>&1; then
		report "$tool" ok "$(command -v "$tool")"
	else
		report "$tool" FAIL "$tool is not installed: $fix"
	fi
}

check_nextest() {
	local version
	if version=$(cargo nextest --version 2>/dev/null | head -n1) && [ -n "$version" ]; then
		report cargo-nextest ok "$version"
	else
		report cargo-nextest FAIL "cargo-nextest is not installed (make test runs the tests with it): cargo install cargo-nextest --locked"
	fi
}

# A first build of the workspace and its tests writes about 3.5 GB under
# target/ without incremental caches (as CI builds; 3,549 MB at 4a31a72),
# more with them; later builds, the databases and the logs much less. Infrastructure alone (make
# infra: the clusters, RabbitMQ, their logs) builds nothing and needs little.
check_disk() {
	local what=$1 target=${CARGO_TARGET_DIR:-$KIT_ROOT/target} need free
	if [ "$what" = infra ] || [ -d "$target" ]; then need=1024; else need=5120; fi
	need=${KIT_MIN_FREE_MB:-$need}
	free=$(df -Pm "$KIT_ROOT" | awk 'NR == 2 { print $4 }')
	if [ "${free:-0}" -ge "$need" ]; then
		report disk ok "$free MB free beside $KIT_ROOT (needs $need MB)"
	else
		report disk FAIL "only ${free:-0} MB free on the disk holding $KIT_ROOT, the stack needs $need MB: free some space (make clean deletes .run/, cargo clean deletes target/) or set KIT_MIN_FREE_MB"
	fi
}

# A .run/ from another version of the kit: its layout stamp, and the major
# version of the PostgreSQL cluster in it against the binaries here.
check_run_dir() {
	local stamp
	if [ -s "$KIT_LAYOUT_FILE" ]; then
		stamp=$(head -n1 "$KIT_LAYOUT_FILE")
		if [ "$stamp" = "$KIT_RUN_LAYOUT" ]; then
			report ".run/ layout" ok "$stamp, as this checkout writes"
		else
			report ".run/ layout" FAIL "$KIT_RUN was made by another version of the kit (layout $stamp, this checkout writes $KIT_RUN_LAYOUT): run make clean (deletes the local databases and logs) or check out the version that made it"
		fi
	elif [ -d "$KIT_RUN" ]; then
		report ".run/ layout" ok "made before layout stamps; compatible, stamped on the next start"
	else
		report ".run/ layout" ok "no .run/ yet: the first start makes it"
	fi
	local home data cluster bin binaries
	home=$(kit_pg_home)
	data=$home/data
	[ -f "$data/PG_VERSION" ] || return 0
	if [ "$home" != "$KIT_RUN/postgres" ] && [ ! -L "$KIT_RUN/postgres" ]; then
		report "postgres cluster" FAIL "$home holds the PostgreSQL cluster of an earlier clone at this path, deleted without make clean: remove that folder (rm -rf $home) and run this again"
		return 0
	fi
	cluster=$(head -n1 "$data/PG_VERSION")
	bin=$(find_pg_bin) || return 0
	binaries=$("$bin/pg_ctl" --version | sed -E 's/.* ([0-9]+)(\.[0-9]+)*.*/\1/')
	if [ "$cluster" = "$binaries" ]; then
		report "postgres cluster" ok "PostgreSQL $cluster in $data"
	else
		report "postgres cluster" FAIL "$data holds a PostgreSQL $cluster cluster but the binaries here are PostgreSQL $binaries: run make clean (deletes the local databases), or set PG_BIN to PostgreSQL $cluster's bin folder"
	fi
}

# Is this clone's PostgreSQL running (its postmaster.pid names a live process)?
our_postgres_pid() {
	local pidfile
	pidfile=$(kit_pg_home)/data/postmaster.pid
	[ -s "$pidfile" ] && kill -0 "$(head -n1 "$pidfile")" 2>/dev/null && head -n1 "$pidfile"
}

check_offset() {
	local saved=${KIT_PORT_OFFSET_SAVED:-0}
	if [ -n "$KIT_PORT_OFFSET_GIVEN" ] && [ "$KIT_PORT_OFFSET_GIVEN" != "$saved" ] && our_postgres_pid >/dev/null; then
		report "port offset" FAIL "this clone's stack is running with KIT_PORT_OFFSET=$saved: run make down first to move it to $KIT_PORT_OFFSET_GIVEN"
	else
		report "port offset" ok "KIT_PORT_OFFSET=$KIT_PORT_OFFSET"
	fi
}

# The process listening on port $1, as "pid name", when the kernel says.
listener() {
	local line
	line=$(ss -ltnpH "sport = :$1" 2>/dev/null | head -n1) || return 1
	[ -n "$line" ] || return 1
	if [[ $line =~ \(\(\"([^\"]+)\",pid=([0-9]+) ]]; then
		say "${BASH_REMATCH[2]} ${BASH_REMATCH[1]}"
	else
		say "? another user's process"
	fi
}

port_taken() {
	if command -v ss >/dev/null 2>&1; then
		[ -n "$(ss -ltnH "sport = :$1" 2>/dev/null)" ]
	else
		port_open "$1"
	fi
}

# The clone a process belongs to: the components stack.sh starts carry
# KIT_CLONE in their environment; PostgreSQL runs in its data directory
# (inside some .run/, or outside with a marker naming it); RabbitMQ's
# command line names its files in .run/. Empty when none of these says.
owner_clone() {
	local pid=$1 cwd cmd clone
	clone=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | sed -n 's/^KIT_CLONE=//p' | head -n1) || clone=""
	if [ -n "$clone" ]; then
		say "$clone"
		return
	fi
	cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) || cwd=""
	if [ -n "$cwd" ] && [ -f "$(dirname "$cwd")/kit-run" ]; then
		dirname "$(head -n1 "$(dirname "$cwd")/kit-run")"
		return
	fi
	cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || cmd=""
	if [[ "$cwd $cmd" =~ (/[^[:space:]\"]+)/\.run(/|[[:space:]\"]|$) ]]; then
		say "${BASH_REMATCH[1]}"
	fi
}

# Who holds port $1: "this clone", "the clone at X", or a process; empty
# when the port is free.
port_holder() {
	local port=$1 pid name clone
	port_taken "$port" || return 0
	read -r pid name < <(listener "$port" || say "? unknown")
	if [ "$pid" = "?" ]; then
		say "a process this user cannot see ($name)"
		return
	fi
	clone=$(owner_clone "$pid")
	if [ "$clone" = "$KIT_ROOT" ]; then
		say "this clone ($name, pid $pid)"
	elif [ -n "$clone" ]; then
		say "the clone at $clone ($name, pid $pid)"
	else
		say "$name (pid $pid)"
	fi
}

# Is `part` running as this clone's own, by the pid it recorded? Needs no
# `ss`: a second `make up` must pass wherever the first did.
part_is_ours() {
	local pidfile
	case $1 in
	postgres) our_postgres_pid >/dev/null && return 0 || return 1 ;;
	rabbitmq | rabbitmq-ui | rabbitmq-dist | epmd) pidfile=$KIT_RUN/rabbitmq/rabbit.pid ;;
	front-door) pidfile=$KIT_PIDS/strangler.pid ;;
	*) pidfile=$KIT_PIDS/$1.pid ;;
	esac
	pid_alive "$pidfile"
}

# Does the stack start `part`? A backend the routes name before its
# component lands (ordering) is nobody's to check yet.
part_starts() {
	case $1 in
	postgres | rabbitmq | rabbitmq-ui | rabbitmq-dist | epmd | front-door) return 0 ;;
	esac
	grep -Eq "^$1[[:space:]]" "$KIT_ROOT/infra/components.txt"
}

# $1: infra (PostgreSQL and RabbitMQ) or up (every part). A port held by
# this clone's own stack is fine: `make up` is idempotent.
check_ports() {
	local which=$1 part var default port holder
	while read -r part var default; do
		port=${!var}
		if [ "$which" = infra ]; then
			case $part in postgres | rabbitmq | rabbitmq-ui | epmd | rabbitmq-dist) ;; *) continue ;; esac
		fi
		part_starts "$part" || continue
		if part_is_ours "$part"; then
			report "port $port $part" ok "this clone's"
			continue
		fi
		holder=$(port_holder "$port")
		if [ -z "$holder" ]; then
			report "port $port $part" ok free
		elif [[ $holder == "this clone"* ]] || [[ $part == epmd && $holder == "epmd "* ]]; then
			# epmd is Erlang's name service: RabbitMQ's command-line tools
			# start one on this port whenever none answers, and any node
			# may share it.
			report "port $port $part" ok "$holder"
		else
			report "port $port $part" FAIL "port $port ($part) is taken by $holder: stop it, or move this clone's stack with KIT_PORT_OFFSET=100 make ... (or set $var alone)"
		fi
	done < <(kit_ports)
}

ports_table() {
	local part var default port holder
	printf '%-14s %-6s %s\n' part port holder
	while read -r part var default; do
		port=${!var}
		holder=$(port_holder "$port")
		printf '%-14s %-6s %s\n' "$part" "$port" "${holder:-free}"
	done < <(kit_ports)
}

all_checks() {
	local what=$1
	check_postgres_binaries
	check_rabbitmq
	check_tool cargo "install Rust from https://rustup.rs"
	check_tool curl "apt-get install curl (the stack scripts poll health with it)"
	[ "$what" != test ] && [ "$what" != all ] || check_nextest
	check_disk "$what"
	check_run_dir
	check_offset
	check_ports "$([ "$what" = up ] || [ "$what" = all ] && say up || say infra)"
}

case "${1:-}" in
"")
	printf '%-26s %-5s %s\n' check state detail
	all_checks all
	exit $FAILED
	;;
preflight)
	MODE=preflight
	case "${2:-}" in infra | up | test) all_checks "$2" ;; *) die "usage: $0 preflight infra|up|test" ;; esac
	;;
ports) ports_table ;;
*) die "usage: $0 [preflight infra|up|test | ports]" ;;
esac
