# shellcheck shell=bash
# Shared settings and helpers for the local stack scripts (sourced, not run).
#
# Everything lives under $KIT_RUN (default: <repo>/.run): data directories,
# logs, pid files and the generated credentials. Ports are environment
# variables with the defaults of ARCHITECTURE.md §3.

set -euo pipefail

KIT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KIT_RUN=${KIT_RUN:-$KIT_ROOT/.run}
KIT_LOGS=$KIT_RUN/logs
KIT_PIDS=$KIT_RUN/pids

KIT_PG_HOST=${KIT_PG_HOST:-127.0.0.1}

# The layout of .run/ this checkout writes. A .run/ stamped with another
# number was made by another version of the kit (infra/local/doctor.sh).
KIT_RUN_LAYOUT=1
KIT_LAYOUT_FILE=$KIT_RUN/layout

# Every port of the stack moves with one number, so that two clones (two
# branches, two training sessions) run side by side: KIT_PORT_OFFSET=100
# puts PostgreSQL on 54420, the front door on 8100 and so on. The first
# `make up` (or `make infra`) with an offset saves it in .run/ports.env;
# later runs in that clone use it without being told again.
KIT_PORTS_FILE=$KIT_RUN/ports.env
KIT_PORT_OFFSET_SAVED=""
if [ -s "$KIT_PORTS_FILE" ]; then
	KIT_PORT_OFFSET_SAVED=$(sed -n 's/^KIT_PORT_OFFSET=\([0-9]*\)$/\1/p' "$KIT_PORTS_FILE")
fi
KIT_PORT_OFFSET_GIVEN=${KIT_PORT_OFFSET:-}
KIT_PORT_OFFSET=${KIT_PORT_OFFSET:-${KIT_PORT_OFFSET_SAVED:-0}}
# Multiples of 100 only: the components' ports lie within 100 of each
# other (8000-8099), so a smaller step would put one clone's front door on
# another's admin port.
if ! [[ $KIT_PORT_OFFSET =~ ^[0-9]{1,4}$ ]] || [ $((10#$KIT_PORT_OFFSET % 100)) != 0 ] || [ $((10#$KIT_PORT_OFFSET)) -gt 8800 ]; then
	printf 'error: KIT_PORT_OFFSET=%s is not one of 0, 100, 200, ... 8800\n' "$KIT_PORT_OFFSET" >&2
	exit 2
fi
KIT_PORT_OFFSET=$((10#$KIT_PORT_OFFSET))

# The stack's ports, one "part variable default" line each; the default is
# before the offset. Erlang's distribution ports (epmd, rabbitmq-dist) are
# kept apart from a system RabbitMQ's (4369/25672). The components' lines
# come from infra/components.txt; the front door is the strangler's second
# port.
kit_ports() {
	printf '%s\n' 'postgres KIT_PG_PORT 54320' 'rabbitmq KIT_AMQP_PORT 56720' \
		'rabbitmq-ui KIT_RABBIT_UI_PORT 15673' 'epmd KIT_EPMD_PORT 43690' \
		'rabbitmq-dist KIT_RABBIT_DIST_PORT 25720'
	local name bin var default
	while read -r name bin var default _; do
		printf '%s %s %s\n' "$name" "$var" "$default"
		if [ "$name" = strangler ]; then printf '%s\n' 'front-door STRANGLER_HTTP__PORT 8000'; fi
	done < <(grep -Ev '^[[:space:]]*(#|$)' "$KIT_ROOT/infra/components.txt")
}

# Sets each port variable the caller did not set: its default plus the offset.
apply_port_offset() {
	local part var default
	while read -r part var default; do
		[ -n "${!var:-}" ] || printf -v "$var" '%s' $((default + KIT_PORT_OFFSET))
		export "${var?}"
	done < <(kit_ports)
}
apply_port_offset

# Generated once by `make up`, never committed: passwords of the PostgreSQL
# superuser, each component role and the RabbitMQ user.
KIT_SECRETS=$KIT_RUN/secrets.env
# Derived from the secrets: the URLs components and tests read.
KIT_STACK_ENV=$KIT_RUN/stack.env

say() { printf '%s\n' "$*"; }
step() { printf '==> %s\n' "$*"; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

is_root() { [ "$(id -u)" = 0 ]; }

# Keeps the kernel from handing the stack's listening ports to outgoing
# connections as their source port: 54320, 56720 and 43690 lie in Linux's
# ephemeral range (32768-60999), and a client socket that took one while
# its server was restarting (the broker-restart tests) made the restart fail
# with eaddrinuse. Linux and root only; elsewhere a no-op. The setting is
# the kernel's and lasts until the next boot (make down leaves it): it only
# keeps these ports out of the range handed to outgoing connections.
reserve_ports() {
	local file=/proc/sys/net/ipv4/ip_local_reserved_ports
	is_root && [ -w "$file" ] || return 0
	local current wanted port
	current=$(cat "$file")
	wanted=$current
	for port in "$@"; do
		case ",$current," in *",$port,"*) continue ;; esac
		wanted=${wanted:+$wanted,}$port
	done
	[ "$wanted" = "$current" ] || { printf '%s\n' "$wanted" >"$file"; } 2>/dev/null || true
}

# Is something accepting TCP connections on 127.0.0.1:$1?
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Tries `$2...` until it succeeds or $1 seconds of the clock have passed
# (whole seconds, so the window is between $1 - 1 and $1; a try started
# before the end runs to its end, then one last try); returns the last
# try's status.
try_for() {
	local seconds=$1
	shift
	local until=$((SECONDS + seconds))
	while ((SECONDS < until)); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.25
	done
	"$@" >/dev/null 2>&1
}

# try_for, or stop naming what did not become ready.
wait_for() {
	local what=$1 seconds=$2
	shift 2
	try_for "$seconds" "$@" || die "$what did not become ready within ${seconds}s (see make logs)"
}

# The database names, one per component, from infra/databases.txt.
kit_databases() { grep -Ev '^[[:space:]]*(#|$)' "$KIT_ROOT/infra/databases.txt"; }

# Creates the secrets file on first use; later runs reuse it so that a second
# `make up` changes nothing.
ensure_secrets() {
	mkdir -p "$KIT_RUN"
	if [ ! -s "$KIT_SECRETS" ]; then
		local tmp
		tmp=$(mktemp "$KIT_RUN/.secrets.XXXXXX")
		{
			say "# Generated by infra/local on $(date -u +%FT%TZ). Local development only."
			say "KIT_PG_SUPERUSER_PASSWORD=$(random_secret)"
			say "KIT_RABBIT_PASSWORD=$(random_secret)"
			local db
			for db in $(kit_databases); do say "KIT_DB_PASSWORD_${db^^}=$(random_secret)"; done
		} >"$tmp"
		chmod 600 "$tmp"
		mv "$tmp" "$KIT_SECRETS"
	fi
	local db name
	for db in $(kit_databases); do
		# A database added to infra/databases.txt after the first run.
		grep -q "^KIT_DB_PASSWORD_${db^^}=" "$KIT_SECRETS" ||
			say "KIT_DB_PASSWORD_${db^^}=$(random_secret)" >>"$KIT_SECRETS"
	done
	# Tokens of the admin planes, added as the components that need them land.
	for name in KIT_STRANGLER_ADMIN_TOKEN KIT_STRANGLER_TESTER_TOKEN KIT_PG_SANDBOX_API_KEY KIT_PG_SANDBOX_ADMIN_TOKEN KIT_ACL_ADMIN_TOKEN KIT_ORDER_HISTORY_ADMIN_TOKEN; do
		grep -q "^$name=" "$KIT_SECRETS" || say "$name=$(random_secret)" >>"$KIT_SECRETS"
	done
	# shellcheck disable=SC1090
	. "$KIT_SECRETS"
}

# Stamps .run/ with this checkout's layout and remembers the port offset,
# so that later commands in this clone find the same ports.
save_run_state() {
	mkdir -p "$KIT_RUN"
	say "$KIT_RUN_LAYOUT" | write_if_changed "$KIT_LAYOUT_FILE"
	{
		say "# The port offset of this clone's stack (infra/local/lib.sh); make down, then"
		say "# KIT_PORT_OFFSET=<n> make up to move it."
		say "KIT_PORT_OFFSET=$KIT_PORT_OFFSET"
	} | write_if_changed "$KIT_PORTS_FILE"
}

random_secret() { od -An -tx1 -N18 /dev/urandom | tr -d ' \n'; }

# Replaces $1 with standard input only when the content differs, so that a
# second `make up` leaves every file as it was. Files are private (0600).
write_if_changed() {
	local target=$1 tmp
	tmp=$(mktemp "$(dirname "$target")/.new.XXXXXX")
	cat >"$tmp"
	chmod 600 "$tmp"
	if cmp -s "$tmp" "$target"; then rm -f "$tmp"; else mv "$tmp" "$target"; fi
}

# Writes .run/stack.env: what a component or a test needs to reach the stack.
write_stack_env() {
	local db upper
	{
		say "# Generated by infra/local from .run/secrets.env. Source it to reach the local stack."
		say "KIT_PG_HOST=$KIT_PG_HOST"
		say "# Every port of this clone's stack (KIT_PORT_OFFSET=$KIT_PORT_OFFSET, see infra/local/lib.sh)."
		local part var default
		while read -r part var default; do say "$var=${!var}"; done < <(kit_ports)
		say "# Where the strangler and Baedal find their peers on these ports."
		say "STRANGLER_BACKENDS__MONOLITH=http://127.0.0.1:$BAEDAL_HTTP_PORT"
		say "STRANGLER_BACKENDS__ORDERING=http://127.0.0.1:$ORDERING_HTTP__PORT"
		say "STRANGLER_BACKENDS__ORDER_HISTORY=http://127.0.0.1:$ORDER_HISTORY_HTTP__PORT"
		say "BAEDAL_PG_URL=http://127.0.0.1:$PG_SANDBOX_HTTP__PORT"
		say "# Superuser URL: used by tests to create a fresh database per test (#[sqlx::test])."
		say "DATABASE_URL=postgres://postgres:$KIT_PG_SUPERUSER_PASSWORD@$KIT_PG_HOST:$KIT_PG_PORT/postgres"
		for db in $(kit_databases); do
			upper=${db^^}
			local pw_var=KIT_DB_PASSWORD_$upper
			say "KIT_DB_URL_$upper=postgres://$db:${!pw_var}@$KIT_PG_HOST:$KIT_PG_PORT/$db"
			# The same URL under the component's own configuration key.
			say "${upper}_DATABASE__URL=postgres://$db:${!pw_var}@$KIT_PG_HOST:$KIT_PG_PORT/$db"
		done
		say "# The strangler's admin token is named 'operator' in its audit log."
		say "STRANGLER_ADMIN__TOKENS__OPERATOR=$KIT_STRANGLER_ADMIN_TOKEN"
		say "STRANGLER_TESTER_TOKEN=$KIT_STRANGLER_TESTER_TOKEN"
		say "# The payment sandbox: the merchant key the monolith presents, and the demo operator's token."
		say "PG_SANDBOX_API_KEY=$KIT_PG_SANDBOX_API_KEY"
		say "PG_SANDBOX_ADMIN_TOKEN=$KIT_PG_SANDBOX_ADMIN_TOKEN"
		say "# The sandbox keeps its ledger here, so a restart forgets no payment."
		say "PG_SANDBOX_LEDGER_PATH=$KIT_RUN/pg-sandbox/ledger.jsonl"
		say "# Baedal, the monolith, reads flat BAEDAL_* variables (legacy on purpose)."
		say "BAEDAL_DB_URL=postgres://legacy:$KIT_DB_PASSWORD_LEGACY@$KIT_PG_HOST:$KIT_PG_PORT/legacy"
		say "BAEDAL_PG_API_KEY=$KIT_PG_SANDBOX_API_KEY"
		say "KIT_AMQP_URL=amqp://kit:$KIT_RABBIT_PASSWORD@127.0.0.1:$KIT_AMQP_PORT/%2f"
		say "# The anti-corruption layer: its own role on the legacy database, the broker, its admin token."
		say "ACL_LEGACY__URL=postgres://acl:$KIT_DB_PASSWORD_ACL@$KIT_PG_HOST:$KIT_PG_PORT/legacy"
		say "ACL_AMQP_URL=amqp://kit:$KIT_RABBIT_PASSWORD@127.0.0.1:$KIT_AMQP_PORT/%2f"
		say "ACL_ADMIN_TOKEN=$KIT_ACL_ADMIN_TOKEN"
		say "# Baedal, for the commands the ACL carries out through the monolith's own API."
		say "ACL_MONOLITH__BASE_URL=http://127.0.0.1:$BAEDAL_HTTP_PORT"
		say "# Reconciliation compares legacy with order-history's export."
		say "ACL_RECONCILE__STORES__ORDER_HISTORY=http://127.0.0.1:$ORDER_HISTORY_HTTP__PORT/v1/export/orders"
		say "# order-history, the CQRS read store: the broker, its admin token, the ACL it imports from."
		say "ORDER_HISTORY_AMQP_URL=amqp://kit:$KIT_RABBIT_PASSWORD@127.0.0.1:$KIT_AMQP_PORT/%2f"
		say "ORDER_HISTORY_ADMIN_TOKEN=$KIT_ORDER_HISTORY_ADMIN_TOKEN"
		say "ORDER_HISTORY_ACL__BASE_URL=http://127.0.0.1:$ACL_HTTP__PORT"
		say "# ordering (stage 2): the broker its outbox relay publishes to, the ACL it reads shops,"
		say "# menus, members and order numbers from, and the gateway it charges through, with the"
		say "# same merchant key as Baedal (one shop front, one merchant)."
		say "ORDERING_AMQP_URL=amqp://kit:$KIT_RABBIT_PASSWORD@127.0.0.1:$KIT_AMQP_PORT/%2f"
		say "ORDERING_ACL__BASE_URL=http://127.0.0.1:$ACL_HTTP__PORT"
		say "ORDERING_PAYMENT__BASE_URL=http://127.0.0.1:$PG_SANDBOX_HTTP__PORT"
		say "ORDERING_PAYMENT__API_KEY=$KIT_PG_SANDBOX_API_KEY"
		say "KIT_RABBIT_MANAGEMENT_URL=http://127.0.0.1:$KIT_RABBIT_UI_PORT"
	} | write_if_changed "$KIT_STACK_ENV"
}

# PostgreSQL's server binaries: $PG_BIN, else Debian's per-version folders
# (newest first), else initdb on PATH. Prints the folder; fails when none.
find_pg_bin() {
	if [ -n "${PG_BIN:-}" ]; then
		[ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] && say "$PG_BIN"
		return
	fi
	local dir
	for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
		[ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && {
			say "$dir"
			return
		}
	done
	command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && dirname "$(command -v initdb)"
}
pg_bin_missing() {
	if [ -n "${PG_BIN:-}" ]; then
		say "PG_BIN=$PG_BIN holds no initdb and pg_ctl: point it at PostgreSQL's bin folder (e.g. /usr/lib/postgresql/15/bin)"
	else
		say "PostgreSQL's initdb and pg_ctl were not found: install the server (apt-get install postgresql, brew install postgresql@15) or set PG_BIN to the folder holding them"
	fi
}

# RabbitMQ's scripts (Debian's /usr/lib/rabbitmq/bin, Homebrew's sbin), or
# $RABBIT_BIN. Prints the folder; fails when none.
find_rabbit_bin() {
	local dir
	for dir in "${RABBIT_BIN:-}" /usr/lib/rabbitmq/bin /opt/homebrew/sbin /usr/local/sbin; do
		[ -n "$dir" ] && [ -x "$dir/rabbitmq-server" ] && {
			say "$dir"
			return 0
		}
	done
	return 1
}

# Where this clone's PostgreSQL cluster lives. Normally .run/postgres; when
# root runs the stack from a directory the `postgres` OS user cannot reach
# (a clone under /root, mode 700), the server could not open its own data
# directory, so the cluster lives in $KIT_PG_EXTERNAL_BASE/<clone>-<hash>
# instead, .run/postgres is a link to it, and a file there names the .run/
# it belongs to. Nobody's home directory is opened up. Prints the folder;
# with `create`, makes the outside one and the link when they are needed.
KIT_PG_EXTERNAL_BASE=${KIT_PG_EXTERNAL_BASE:-/var/lib/kit-postgres}
kit_pg_home() {
	local inside=$KIT_RUN/postgres
	if [ -L "$inside" ]; then
		readlink "$inside"
		return
	fi
	if ! is_root || [ -f "$inside/data/PG_VERSION" ] || postgres_can_reach "$KIT_RUN"; then
		say "$inside"
		return
	fi
	local outside
	outside=$KIT_PG_EXTERNAL_BASE/$(basename "$KIT_ROOT")-$(printf '%s' "$KIT_RUN" | cksum | cut -d' ' -f1)
	if [ "${1:-}" = create ]; then
		# A cluster there without our link is a clone's that was deleted
		# without `make clean`: its passwords are gone with it.
		[ ! -e "$outside/data/PG_VERSION" ] ||
			die "$outside holds the PostgreSQL cluster of an earlier clone at this path, deleted without make clean: remove that folder (rm -rf $outside) and run this again"
		mkdir -p "$outside"
		chmod 755 "$KIT_PG_EXTERNAL_BASE"
		say "$KIT_RUN" >"$outside/kit-run"
		# What is left inside is a failed first start's (no PG_VERSION above).
		rm -rf "$inside"
		mkdir -p "$KIT_RUN"
		ln -s "$outside" "$inside"
	fi
	say "$outside"
}

# Can the postgres OS user reach $1 (or, while it does not exist yet, the
# nearest folder above it, which is what it will be created in)?
postgres_can_reach() {
	local probe=$1
	while [ ! -e "$probe" ]; do probe=$(dirname "$probe"); done
	id postgres >/dev/null 2>&1 && runuser -u postgres -- test -x "$probe" 2>/dev/null
}

# Reads a pid file and tells whether that process is alive.
pid_alive() {
	local file=$1
	[ -s "$file" ] && kill -0 "$(head -n1 "$file")" 2>/dev/null
}

# Sends TERM to the process in a pid file, waits up to $2 seconds, then KILL.
stop_pid() {
	local file=$1 seconds=${2:-10} pid i
	[ -s "$file" ] || return 0
	pid=$(head -n1 "$file")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < seconds * 4; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.25
		done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$file"
}
