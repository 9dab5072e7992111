#!/usr/bin/env bash
# RabbitMQ for the local stack: a node in user space with its data, config and
# logs in .run/rabbitmq, AMQP and the management UI on 127.0.0.1 only.
#
#   rabbitmq.sh start    install (Debian/Ubuntu as root), start, wait until ready
#   rabbitmq.sh stop     stop the node and its epmd
#   rabbitmq.sh status   prints one line, exits 1 when not running
#   rabbitmq.sh restart-app   restart the application in the running node (chaos tests)
#
# Debian's /usr/sbin/rabbitmq-server wrapper switches to the `rabbitmq` user
# and reads /etc/rabbitmq; the scripts in /usr/lib/rabbitmq/bin run as the
# caller and honour the RABBITMQ_* variables set below, so we use those.

. "$(dirname "$0")/lib.sh"

RABBIT_DIR=$KIT_RUN/rabbitmq
RABBIT_LOG=$RABBIT_DIR/log/console.log
# The same name in every clone: each clone's epmd (its own port, from
# KIT_PORT_OFFSET) knows only its own node, and the name, which names the
# node's data folder, survives a change of offset.
NODE=kit@localhost

install() {
	find_rabbit_bin >/dev/null && return 0
	if [ -f /etc/debian_version ] && is_root && command -v apt-get >/dev/null; then
		step "installing rabbitmq-server with apt (first run only)"
		# Keep the package's post-install from starting a system-wide node: we
		# run our own. policy-rc.d is Debian's documented switch for that.
		local policy=/usr/sbin/policy-rc.d made_policy=""
		if [ ! -e "$policy" ]; then
			printf '#!/bin/sh\nexit 101\n' >"$policy"
			chmod +x "$policy"
			made_policy=1
		fi
		local log=$KIT_RUN/apt-rabbitmq.log
		mkdir -p "$KIT_RUN"
		if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server; } \
			</dev/null >"$log" 2>&1; then
			[ -n "$made_policy" ] && rm -f "$policy"
			die "apt-get could not install rabbitmq-server, see $log"
		fi
		[ -n "$made_policy" ] && rm -f "$policy"
		return 0
	fi
	die "RabbitMQ is not installed. Install it, then run make up again:
    Debian/Ubuntu:  sudo apt-get install rabbitmq-server
    macOS:          brew install rabbitmq
  (or set RABBIT_BIN to the folder holding rabbitmq-server)"
}

# Every RabbitMQ command we run sees the same node, cookie and files.
rabbit_env() {
	export HOME=$RABBIT_DIR # the Erlang cookie lives in $HOME
	export RABBITMQ_NODENAME=$NODE
	export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
	export RABBITMQ_NODE_PORT=$KIT_AMQP_PORT
	export RABBITMQ_DIST_PORT=$KIT_RABBIT_DIST_PORT
	# Node-to-node (clustering) traffic on loopback too, not on every interface.
	export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
	export ERL_EPMD_PORT=$KIT_EPMD_PORT
	export ERL_EPMD_ADDRESS=127.0.0.1
	export RABBITMQ_CONF_ENV_FILE=$RABBIT_DIR/rabbitmq-env.conf
	export RABBITMQ_CONFIG_FILE=$RABBIT_DIR/rabbitmq.conf
	export RABBITMQ_ADVANCED_CONFIG_FILE=$RABBIT_DIR/advanced.config
	export RABBITMQ_ENABLED_PLUGINS_FILE=$RABBIT_DIR/enabled_plugins
	export RABBITMQ_MNESIA_BASE=$RABBIT_DIR/mnesia
	export RABBITMQ_LOG_BASE=$RABBIT_DIR/log
	export RABBITMQ_PID_FILE=$RABBIT_DIR/rabbit.pid
}

ctl() { "$RABBIT_BIN/rabbitmqctl" -q -n "$NODE" "$@"; }

# A node registers with its epmd, so with no epmd listening there is no node
# to ask, and asking would start an epmd (the Erlang VM of rabbitmqctl
# does), left behind by `make status` on a stopped stack.
is_running() { [ -d "$RABBIT_DIR" ] && port_open "$KIT_EPMD_PORT" && ctl status >/dev/null 2>&1; }

write_config() {
	mkdir -p "$RABBIT_DIR/log" "$RABBIT_DIR/mnesia"
	: | write_if_changed "$RABBIT_DIR/rabbitmq-env.conf"
	printf '[rabbitmq_management].\n' | write_if_changed "$RABBIT_DIR/enabled_plugins"
	# The default user is created only when the node's database is new, so the
	# password stays the one in .run/secrets.env for the life of .run/.
	write_if_changed "$RABBIT_DIR/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$KIT_AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $KIT_RABBIT_UI_PORT
default_user = kit
default_pass = $KIT_RABBIT_PASSWORD
default_user_tags.administrator = true
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
log.file.level = warning
log.console = false
EOF
}

start() {
	install
	RABBIT_BIN=$(find_rabbit_bin)
	ensure_secrets
	rabbit_env
	write_config
	reserve_ports "$KIT_AMQP_PORT" "$KIT_EPMD_PORT" "$KIT_RABBIT_DIST_PORT" "$KIT_RABBIT_UI_PORT"
	if is_running; then
		say "rabbitmq     already running on 127.0.0.1:$KIT_AMQP_PORT"
	else
		port_open "$KIT_AMQP_PORT" && die "port $KIT_AMQP_PORT is taken by another process; set KIT_AMQP_PORT"
		step "starting RabbitMQ on 127.0.0.1:$KIT_AMQP_PORT (management UI :$KIT_RABBIT_UI_PORT)"
		# epmd first, on our port and loopback only, detached from our output
		# (if the node started it, it would inherit the caller's pipe).
		local epmd
		epmd=$(command -v epmd || ls /usr/lib/erlang/erts-*/bin/epmd 2>/dev/null | head -n1 || true)
		[ -n "$epmd" ] && setsid "$epmd" -daemon </dev/null >/dev/null 2>&1
		setsid "$RABBIT_BIN/rabbitmq-server" </dev/null >"$RABBIT_LOG" 2>&1 &
		echo $! >"$RABBIT_DIR/server.pid"
		# rabbitmqctl await_startup's own default bound.
		await_node 300 || {
			# Nothing started here keeps running (or holding ports) once the
			# folder is gone.
			stop_pid "$RABBIT_DIR/server.pid" 20
			die "RabbitMQ did not become ready within 300 s (its logs are above and in $RABBIT_DIR/log)"
		}
	fi
	mkdir -p "$KIT_LOGS"
	ln -sf "$RABBIT_LOG" "$KIT_LOGS/rabbitmq.log"
	wait_for "RabbitMQ management UI" 30 port_open "$KIT_RABBIT_UI_PORT"
}

stop() {
	RABBIT_BIN=$(find_rabbit_bin) || return 0
	rabbit_env
	if is_running; then
		step "stopping RabbitMQ"
		ctl stop >/dev/null 2>&1 || true
	fi
	stop_pid "$RABBIT_DIR/server.pid" 20
	local epmd
	epmd=$(command -v epmd || ls /usr/lib/erlang/erts-*/bin/epmd 2>/dev/null | head -n1 || true)
	[ -n "$epmd" ] && "$epmd" -kill >/dev/null 2>&1 || true
}

# Restarts the RabbitMQ application inside the running node: every client
# connection drops, durable queues and persistent messages survive. The
# restart test on the branch wip/broker-restart uses it (docs/adr/0006).
restart_app() {
	RABBIT_BIN=$(find_rabbit_bin) || die "RabbitMQ is not installed"
	rabbit_env
	is_running || die "RabbitMQ is not running"
	step "restarting the RabbitMQ application"
	reserve_ports "$KIT_AMQP_PORT"
	ctl stop_app >/dev/null
	sleep "${KIT_RABBIT_DOWN_SECONDS:-2}"
	# A listener that cannot bind yet fails start_app; the node stays up,
	# so trying again is safe.
	local tries
	for tries in 1 2 3; do
		ctl start_app >/dev/null 2>&1 && break
		[ "$tries" = 3 ] && die "RabbitMQ's application did not start again (see make logs)"
		sleep 1
	done
	await_node 60 || die "RabbitMQ did not become ready within 60 s of its restart (its logs are above and in $RABBIT_DIR/log)"
}

# Waits up to $1 seconds for the node to boot; if it does not, shows why
# (rabbitmqctl's own answer and the end of the node's logs: the folder may
# be gone by the time anyone looks, as a CI run's clone is removed) and
# returns 1.
await_node() {
	try_for "$1" ctl await_startup --timeout 5 && return 0
	{
		printf '==> rabbitmqctl await_startup says\n'
		ctl await_startup --timeout 5 2>&1 | tail -n 20 | sed 's/^/    /'
		local log
		for log in "$RABBIT_LOG" "$RABBIT_DIR/log/$NODE.log"; do
			[ -s "$log" ] || continue
			printf '==> the last lines of %s\n' "$log"
			tail -n 40 "$log" | sed 's/^/    /'
		done
	} >&2 || true
	return 1
}

status() {
	if RABBIT_BIN=$(find_rabbit_bin) && rabbit_env && is_running; then
		say "rabbitmq     running   amqp://127.0.0.1:$KIT_AMQP_PORT   ui http://127.0.0.1:$KIT_RABBIT_UI_PORT"
	else
		say "rabbitmq     stopped"
		return 1
	fi
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
restart-app) restart_app ;;
*) die "usage: $0 start|stop|status|restart-app" ;;
esac
