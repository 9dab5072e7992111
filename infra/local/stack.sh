#!/usr/bin/env bash
# The whole local stack, as the Makefile drives it:
#
#   stack.sh infra [test]  PostgreSQL + RabbitMQ, databases and roles,
#                      .run/stack.env (with `test`: cargo-nextest checked too)
#   stack.sh up        infra, then build and start every component in
#                      infra/components.txt, wait until each is ready, print URLs
#   stack.sh down      stop the components, then RabbitMQ and PostgreSQL
#   stack.sh status    one line per part, then who holds each port; exits 1
#                      when something is down
#   stack.sh clean     down, then delete .run/ (and a cluster kept outside it)
#   stack.sh exec NAME run one component with its own environment only
#   stack.sh logs      the last lines of every log under .run/logs
#
# Every step is idempotent: a second `up` finds everything running, starts
# nothing and only reports.

. "$(dirname "$0")/lib.sh"

HERE=$(dirname "$0")

# $1: what the caller goes on to do (infra, up or test), for the checks.
infra() {
	bash "$HERE/doctor.sh" preflight "${1:-infra}"
	save_run_state
	bash "$HERE/postgres.sh" start
	bash "$HERE/rabbitmq.sh" start
	ensure_secrets
	write_stack_env
}

# Lines of infra/components.txt: name binary port-variable default-port prefix.
components() { grep -Ev '^[[:space:]]*(#|$)' "$KIT_ROOT/infra/components.txt" || true; }

component_binary() { say "${CARGO_TARGET_DIR:-$KIT_ROOT/target}/debug/$1"; }

start_components() {
	local lines
	lines=$(components)
	[ -n "$lines" ] || return 0
	step "building the components"
	(cd "$KIT_ROOT" && cargo build --bins --quiet) || die "cargo build failed"
	mkdir -p "$KIT_LOGS" "$KIT_PIDS"
	local name bin port_var default_port port exe
	while read -r name bin port_var default_port _; do
		exe=$(component_binary "$bin")
		[ -x "$exe" ] || continue
		port=${!port_var}
		# A component with a before-<name>.sh needs the ones above it
		# ready first (the ACL needs Baedal's schema for its grants).
		if [ -f "$HERE/before-$name.sh" ]; then
			wait_until_ready "$lines" "$name"
			bash "$HERE/before-$name.sh" </dev/null || die "infra/local/before-$name.sh failed"
		fi
		if pid_alive "$KIT_PIDS/$name.pid"; then
			say "$(printf '%-14s' "$name") already running on 127.0.0.1:$port"
			continue
		fi
		port_open "$port" && die "port $port for $name is taken by another process; set $port_var"
		step "starting $name (health on 127.0.0.1:$port)"
		(
			cd "$KIT_ROOT"
			exec setsid bash "$KIT_ROOT/infra/local/stack.sh" exec "$name" </dev/null >>"$KIT_LOGS/$name.log" 2>&1
		) &
		echo $! >"$KIT_PIDS/$name.pid"
	done <<<"$lines"
	wait_until_ready "$lines" ""
}

# Runs component $1 with the environment it is given, and no other: a few
# basics of the caller's (PATH, HOME, locale, RUST_LOG), KIT_CLONE naming
# this clone (make status), the lines of .run/stack.env that start with its
# prefix (infra/components.txt), then the caller's own variables with that
# prefix (so `BAEDAL_LOG=debug make up` still works). Nothing of another
# component's, no superuser URL. Then VAR=VALUE arguments (its prefix only)
# override, and a PROGRAM with arguments may stand in for its binary (the
# test of this environment, tests/tests/component_env.rs, uses both).
#   stack.sh exec NAME [VAR=VALUE...] [PROGRAM ARGS...]
exec_component() {
	local name=${1:-} line bin="" prefix=""
	[ -n "$name" ] || die "usage: $0 exec NAME [VAR=VALUE...] [PROGRAM ARGS...]"
	shift
	line=$(components | awk -v n="$name" '$1 == n')
	[ -n "$line" ] || die "no component $name in infra/components.txt"
	read -r _ bin _ _ prefix _ <<<"$line"
	[ -n "$prefix" ] || die "infra/components.txt gives $name no variable prefix"
	[ -s "$KIT_STACK_ENV" ] || die "no $KIT_STACK_ENV yet: run make infra first"
	local -a base=() own=()
	local var
	for var in PATH HOME LANG LC_ALL TZ RUST_LOG RUST_BACKTRACE; do
		if [ -n "${!var:-}" ]; then base+=("$var=${!var}"); fi
	done
	base+=("KIT_CLONE=$KIT_ROOT")
	while IFS= read -r line; do
		if [[ $line == "$prefix"*=* ]]; then own+=("$line"); fi
	done <"$KIT_STACK_ENV"
	# The caller's own settings for it win (BAEDAL_LOG=debug make up).
	while IFS= read -r -d '' line; do
		if [[ $line == "$prefix"*=* ]]; then own+=("$line"); fi
	done < <(env -0)
	while [ $# -gt 0 ] && [[ $1 == *=* ]]; do
		[[ $1 == "$prefix"* ]] || die "$1: $name's environment takes only ${prefix}* variables"
		own+=("$1")
		shift
	done
	if [ $# -eq 0 ]; then set -- "$(component_binary "$bin")"; fi
	cd "$KIT_ROOT"
	exec env -i "${base[@]}" "${own[@]}" "$@"
}

# Empties the payment sandbox's ledger (make seed): the reseeded database
# numbers its orders from the start again, and their payment keys must not
# meet the old payments. A running sandbox is asked; a stopped one's journal
# is removed.
reset_payments() {
	ensure_secrets
	local journal=$KIT_RUN/pg-sandbox/ledger.jsonl
	if pid_alive "$KIT_PIDS/pg-sandbox.pid"; then
		curl -fsS -o /dev/null -X DELETE -H "Authorization: Bearer $KIT_PG_SANDBOX_ADMIN_TOKEN" \
			"http://127.0.0.1:$PG_SANDBOX_HTTP__PORT/admin/payments" ||
			die "the payment sandbox did not empty its ledger (see .run/logs/pg-sandbox.log)"
		say "the payment sandbox's ledger is empty"
	elif [ -e "$journal" ]; then
		rm -f "$journal"
		say "removed the payment sandbox's ledger ($journal)"
	fi
}

# Waits for every started component listed before $2 ("" for all).
wait_until_ready() {
	local name bin port_var default_port port
	while read -r name bin port_var default_port _; do
		[ "$name" = "$2" ] && return 0
		[ -f "$KIT_PIDS/$name.pid" ] || continue
		port=${!port_var}
		if try_for 60 component_ready "$name" "$port"; then
			pid_alive "$KIT_PIDS/$name.pid" && continue
			die "$name exited; its log is .run/logs/$name.log"
		fi
		die "$name did not become ready within 60 s (see .run/logs/$name.log)"
	done <<<"$1"
}

# Ready, or gone: true either way, as there is nothing more to wait for
# (the caller tells the two apart).
component_ready() {
	pid_alive "$KIT_PIDS/$1.pid" || return 0
	curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$2/health/ready"
}

stop_components() {
	local name
	[ -d "$KIT_PIDS" ] || return 0
	for pidfile in "$KIT_PIDS"/*.pid; do
		[ -e "$pidfile" ] || continue
		name=$(basename "$pidfile" .pid)
		pid_alive "$pidfile" && step "stopping $name"
		stop_pid "$pidfile" 15
	done
}

status() {
	local rc=0 name bin port_var default_port port
	bash "$HERE/postgres.sh" status || rc=1
	bash "$HERE/rabbitmq.sh" status || rc=1
	while read -r name bin port_var default_port _; do
		[ -n "$name" ] || continue
		port=${!port_var}
		if pid_alive "$KIT_PIDS/$name.pid"; then
			if [ "$name" = strangler ]; then
				say "$(printf '%-14s' "$name") running   http://127.0.0.1:$STRANGLER_HTTP__PORT   front door: send client requests here"
				say "$(printf '%-14s' '') admin     http://127.0.0.1:$port   dashboard and admin API (token needed)"
			else
				say "$(printf '%-14s' "$name") running   http://127.0.0.1:$port"
			fi
		elif [ -x "$(component_binary "$bin")" ]; then
			say "$(printf '%-14s' "$name") stopped"
			rc=1
		fi
	done <<<"$(components)"
	say ""
	say "Ports of this clone ($KIT_ROOT, KIT_PORT_OFFSET=$KIT_PORT_OFFSET) and who holds them:"
	bash "$HERE/doctor.sh" ports | sed 's/^/  /'
	return $rc
}

urls() {
	say ""
	say "The stack is up:"
	say "  PostgreSQL           postgres://127.0.0.1:$KIT_PG_PORT   (credentials in .run/stack.env)"
	say "  RabbitMQ (AMQP)      amqp://127.0.0.1:$KIT_AMQP_PORT"
	say "  RabbitMQ management  http://127.0.0.1:$KIT_RABBIT_UI_PORT   (user kit, password KIT_RABBIT_PASSWORD in .run/secrets.env)"
	local name bin port_var default_port
	while read -r name bin port_var default_port _; do
		[ -n "$name" ] && [ "$name" != strangler ] || continue
		pid_alive "$KIT_PIDS/$name.pid" &&
			say "  $(printf '%-20s' "$name") http://127.0.0.1:${!port_var}"
	done <<<"$(components)"
	if pid_alive "$KIT_PIDS/strangler.pid"; then
		say ""
		say "  Front door (send every client request here):  http://127.0.0.1:$STRANGLER_HTTP__PORT"
		say "  Strangler dashboard and admin API:             http://127.0.0.1:$STRANGLER_ADMIN__HTTP__PORT/"
		say "    token: KIT_STRANGLER_ADMIN_TOKEN in .run/secrets.env"
	fi
	if pid_alive "$KIT_PIDS/acl.pid"; then
		say "  ACL façade, OpenAPI and admin:                http://127.0.0.1:$ACL_HTTP__PORT/   (admin token: KIT_ACL_ADMIN_TOKEN in .run/secrets.env)"
	fi
	if pid_alive "$KIT_PIDS/order-history.pid"; then
		say "  order-history status page, lag and imports:   http://127.0.0.1:$ORDER_HISTORY_HTTP__PORT/   (admin token: KIT_ORDER_HISTORY_ADMIN_TOKEN in .run/secrets.env)"
	fi
	if pid_alive "$KIT_PIDS/pg-sandbox.pid"; then
		say "  Payment sandbox behaviour (latency, declines, failures): PUT http://127.0.0.1:$PG_SANDBOX_HTTP__PORT/admin/behaviour"
		say "    token: KIT_PG_SANDBOX_ADMIN_TOKEN in .run/secrets.env"
	fi
	say ""
	say "make status | make logs | make down"
}

logs() {
	[ -d "$KIT_LOGS" ] || die "no logs yet: run make up"
	local log
	for log in "$KIT_LOGS"/*.log; do
		[ -e "$log" ] || continue
		say "==> $log <=="
		tail -n "${LINES:-20}" "$log" 2>/dev/null || true
		say ""
	done
}

down() {
	stop_components
	bash "$HERE/rabbitmq.sh" stop
	bash "$HERE/postgres.sh" stop
}

# Deletes .run/ and, when the cluster was kept outside it (kit_pg_home in
# lib.sh), that folder too, once its marker confirms it is this clone's.
clean() {
	local pg=$KIT_RUN/postgres outside
	if [ -L "$pg" ]; then
		outside=$(readlink "$pg")
		if [ "$(head -n1 "$outside/kit-run" 2>/dev/null)" = "$KIT_RUN" ]; then
			step "deleting $outside (this clone's PostgreSQL cluster)"
			rm -rf "$outside"
		fi
	fi
	step "deleting $KIT_RUN"
	rm -rf "$KIT_RUN"
}

case "${1:-}" in
infra) infra "${2:-infra}" ;;
up)
	infra up
	start_components
	urls
	;;
down) down ;;
status) status ;;
logs) logs ;;
exec)
	shift
	exec_component "$@"
	;;
reset-payments) reset_payments ;;
clean)
	down
	clean
	;;
*) die "usage: $0 infra [test]|up|down|status|logs|clean|exec NAME [VAR=VALUE...] [PROGRAM...]" ;;
esac
