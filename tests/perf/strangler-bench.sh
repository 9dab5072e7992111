#!/usr/bin/env bash
# Benchmark: the strangler against nginx, proxying the same backend on the
# same machine in the same run, measured with wrk. Results are ratios, merged
# into target/bench/results.json under "strangler_proxy".
#
#   throughput   64 connections: requests/s through each proxy, and direct
#   latency      4 connections (light load): p50/p99 added over direct
#   route table  the strangler with 100 routes vs 1 route
#   CPU          each proxy's user + system time per request at 64
#                connections, read from /proc: steadier than req/s when
#                the machine is shared, since it does not depend on how
#                much CPU the proxy was given
#
# Shared 2-core machines are noisy: one run can be 30% off the next. So all
# proxies run at once and are measured in interleaved rounds (direct, nginx,
# strangler, strangler with 100 routes, then again), and each figure is the
# median over the rounds; every round is kept in the JSON.
#
# Targets (ARCHITECTURE.md §15): throughput ≥ 0.9× nginx; added p99 ≤ 1.2×
# nginx's added p99; 100 routes ≥ 0.95× one route. The script reports; it
# does not fail on a missed target (timings are not pass/fail tests).
#
# BENCH_SECONDS (default 5) sets each measurement's length, BENCH_ROUNDS
# (default 3) the number of rounds.

. "$(dirname "$0")/../../infra/local/lib.sh"

SECONDS_EACH=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
BENCH=$KIT_RUN/bench
RESULTS=${CARGO_TARGET_DIR:-$KIT_ROOT/target}/bench/results.json
BACKEND_PORT=${BENCH_BACKEND_PORT:-18090}
NGINX_PORT=${BENCH_NGINX_PORT:-18091}
# The strangler with one route on BENCH_STRANGLER_PORT, with 100 routes two
# ports above; each has its admin port one above its public port.
STRANGLER_PORT=${BENCH_STRANGLER_PORT:-18092}
BENCH_DB=strangler_bench

need_tools() {
	command -v wrk >/dev/null && command -v nginx >/dev/null && return 0
	if [ -f /etc/debian_version ] && is_root; then
		step "installing nginx-light and wrk with apt (first run only)"
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light wrk; } \
			</dev/null >"$BENCH/apt.log" 2>&1 || die "apt-get failed, see $BENCH/apt.log"
		return 0
	fi
	die "the benchmark needs nginx and wrk: sudo apt-get install nginx-light wrk (brew install nginx wrk)"
}

# nginx in the foreground of a detached session, its logs in $BENCH.
start_nginx() {
	local name=$1 workers=$2 body=$3
	mkdir -p "$BENCH/$name"
	cat >"$BENCH/$name/nginx.conf" <<CONF
worker_processes $workers;
pid $BENCH/$name/nginx.pid;
error_log $BENCH/$name/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $BENCH/$name/body;
  proxy_temp_path $BENCH/$name/proxy;
  fastcgi_temp_path $BENCH/$name/fastcgi;
  uwsgi_temp_path $BENCH/$name/uwsgi;
  scgi_temp_path $BENCH/$name/scgi;
  keepalive_requests 1000000;
  $body
}
CONF
	setsid nginx -p "$BENCH/$name" -c "$BENCH/$name/nginx.conf" -g 'daemon off;' </dev/null >>"$BENCH/$name/stdout.log" 2>&1 &
	echo $! >"$BENCH/$name.pid"
}

start_backend() {
	start_nginx backend 1 "server {
    listen 127.0.0.1:$BACKEND_PORT;
    location / { default_type application/json; return 200 '{\"order_no\":\"20261122-000001\",\"status\":\"PAID\"}'; }
  }"
	wait_for "backend nginx" 10 port_open "$BACKEND_PORT"
}

start_nginx_proxy() {
	# The anchor: nginx as a reverse proxy, configured as a careful operator
	# would (keep-alive upstream, forwarding headers, request id).
	start_nginx proxy 2 "upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 256; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Request-Id \$request_id;
    }
  }"
	wait_for "nginx proxy" 10 port_open "$NGINX_PORT"
}

psql_admin() { psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" "$@"; }

# Writes a plan with $1 routes; the benchmarked path matches route 57 (or
# the only one).
write_plan() {
	local count=$1 file=$BENCH/plan-$1.toml i
	{
		say 'default_backend = "monolith"'
		say '[backends.monolith]'
		say "instances = [\"http://127.0.0.1:$BACKEND_PORT\"]"
		for ((i = 0; i < count; i++)); do
			local n=$((count == 1 ? 57 : i))
			say '[[routes]]'
			say "name = \"route-$n\""
			say 'methods = ["GET"]'
			say "path = \"/api/r$n/orders/{order_no}\""
		done
	} >"$file"
	say "$file"
}

# start_strangler ROUTES PORT: a strangler with its own database.
start_strangler() {
	local routes=$1 port=$2 plan
	plan=$(write_plan "$routes")
	psql_admin -c "DROP DATABASE IF EXISTS ${BENCH_DB}_$routes" -c "CREATE DATABASE ${BENCH_DB}_$routes"
	(
		export STRANGLER_DATABASE__URL=${DATABASE_URL%/*}/${BENCH_DB}_$routes
		export STRANGLER_HTTP__PORT=$port STRANGLER_ADMIN__HTTP__PORT=$((port + 1))
		export STRANGLER_PLAN=$plan STRANGLER_TELEMETRY__FILTER=warn
		exec setsid "$KIT_ROOT/target/release/strangler" </dev/null >>"$BENCH/strangler-$routes.log" 2>&1
	) &
	echo $! >"$BENCH/strangler-$routes.pid"
	wait_for "strangler with $routes routes" 30 curl -fsS -o /dev/null "http://127.0.0.1:$((port + 1))/health/ready"
}

stop_all() {
	local pidfile
	for pidfile in "$BENCH"/*.pid; do
		[ -e "$pidfile" ] && stop_pid "$pidfile" 5
	done
	[ -n "${DATABASE_URL:-}" ] && psql_admin -c "DROP DATABASE IF EXISTS ${BENCH_DB}_1" -c "DROP DATABASE IF EXISTS ${BENCH_DB}_100" 2>/dev/null || true
}

# CPU time (user + system, in clock ticks) used so far by the given
# processes' threads.
cpu_ticks() {
	local total=0 pid stat line
	local -a fields
	for pid in "$@"; do
		for stat in /proc/"$pid"/task/*/stat; do
			read -r line <"$stat" 2>/dev/null || continue
			# Fields after the command name, which may hold spaces: utime and
			# stime are the 12th and 13th.
			read -ra fields <<<"${line##*) }"
			total=$((total + fields[11] + fields[12]))
		done
	done
	say "$total"
}

# The processes doing a target's work: nginx's workers, or the strangler.
busy_pids() {
	case $1 in
	direct) pgrep -P "$(cat "$BENCH/backend.pid")" ;;
	nginx) pgrep -P "$(cat "$BENCH/proxy.pid")" ;;
	strangler_1_route) cat "$BENCH/strangler-1.pid" ;;
	strangler_100_routes) cat "$BENCH/strangler-100.pid" ;;
	esac
}

# wrk CONNECTIONS URL [PID...] → one JSON line, with the CPU ticks the
# given processes used during the run.
measure() {
	local connections=$1 url=$2 before after run
	shift 2
	before=$(cpu_ticks "$@")
	run=$(wrk -t1 -c"$connections" -d"${SECONDS_EACH}s" -s "$KIT_ROOT/tests/perf/wrk-report.lua" "$url" 2>/dev/null | tail -n1)
	after=$(cpu_ticks "$@")
	say "${run%\}},\"cpu_ticks\":$((after - before))}"
}

warm_up() {
	local url
	for url in "$@"; do wrk -t1 -c64 -d2s "$url" >/dev/null 2>&1; done
}

main() {
	mkdir -p "$BENCH" "$(dirname "$RESULTS")"
	need_tools
	bash "$KIT_ROOT/infra/local/stack.sh" infra >/dev/null
	set -a
	# shellcheck disable=SC1091
	. "$KIT_STACK_ENV"
	set +a
	step "building the strangler (release)"
	(cd "$KIT_ROOT" && cargo build --release --quiet -p strangler) || die "cargo build failed"
	trap stop_all EXIT
	start_backend
	start_nginx_proxy

	start_strangler 1 "$STRANGLER_PORT"
	start_strangler 100 "$((STRANGLER_PORT + 2))"

	local path=/api/r57/orders/20261122-000001 round runs=$BENCH/runs.jsonl
	local -A url=(
		[direct]="http://127.0.0.1:$BACKEND_PORT$path"
		[nginx]="http://127.0.0.1:$NGINX_PORT$path"
		[strangler_1_route]="http://127.0.0.1:$STRANGLER_PORT$path"
		[strangler_100_routes]="http://127.0.0.1:$((STRANGLER_PORT + 2))$path"
	)
	warm_up "${url[@]}"
	: >"$runs"
	for ((round = 1; round <= ROUNDS; round++)); do
		step "round $round of $ROUNDS"
		local name
		for name in direct nginx strangler_1_route strangler_100_routes; do
			# shellcheck disable=SC2046 # one word per pid
			say "{\"round\":$round,\"name\":\"$name\",\"run\":$(measure 64 "${url[$name]}" $(busy_pids "$name"))}" >>"$runs"
		done
		for name in direct nginx strangler_1_route; do
			say "{\"round\":$round,\"name\":\"${name%%_1_route}_light\",\"run\":$(measure 4 "${url[$name]}")}" >>"$runs"
		done
	done

	python3 - "$RESULTS" "$SECONDS_EACH" "$ROUNDS" "$runs" "$(getconf CLK_TCK)" <<'PY'
import json, os, sys, platform, datetime, statistics
results, seconds, rounds, runs_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ticks_per_second = int(sys.argv[5])
rounds_by_name = {}
with open(runs_file) as f:
    for line in f:
        entry = json.loads(line)
        run = entry["run"]
        if run.get("requests") and run.get("cpu_ticks", 0) > 0:
            run["cpu_us_per_request"] = round(run["cpu_ticks"] / ticks_per_second * 1e6 / run["requests"], 2)
        rounds_by_name.setdefault(entry["name"], []).append(run)
def median_run(runs):
    keys = ("rps", "p50_us", "p90_us", "p99_us", "max_us")
    run = {k: statistics.median(r[k] for r in runs) for k in keys}
    cpu = [r["cpu_us_per_request"] for r in runs if "cpu_us_per_request" in r]
    if cpu:
        run["cpu_us_per_request"] = statistics.median(cpu)
    run["requests"] = sum(r["requests"] for r in runs)
    run["errors"] = sum(r["errors"] for r in runs)
    run["rounds"] = runs
    return run
medians = {name: median_run(runs) for name, runs in rounds_by_name.items()}
direct, nginx, one, hundred = (medians[n] for n in ("direct", "nginx", "strangler_1_route", "strangler_100_routes"))
direct_l, nginx_l, strangler_l = (medians[n] for n in ("direct_light", "nginx_light", "strangler_light"))
def added(run, base, p): return max(run[p] - base[p], 0)
section = {
    "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    "seconds_per_run": seconds,
    "rounds": rounds,
    "statistic": "median over rounds",
    "runs": medians,
    "throughput_ratio_vs_nginx": round(one["rps"] / nginx["rps"], 3),
    "added_latency_us": {
        "nginx": {"p50": added(nginx_l, direct_l, "p50_us"), "p99": added(nginx_l, direct_l, "p99_us")},
        "strangler": {"p50": added(strangler_l, direct_l, "p50_us"), "p99": added(strangler_l, direct_l, "p99_us")},
    },
    "route_table_ratio_100_vs_1": round(hundred["rps"] / one["rps"], 3),
    "cpu_per_request_ratio_vs_nginx": round(one["cpu_us_per_request"] / nginx["cpu_us_per_request"], 3)
        if one.get("cpu_us_per_request") and nginx.get("cpu_us_per_request") else None,
    "targets": {"throughput_ratio_vs_nginx": 0.9, "added_p99_ratio_vs_nginx": 1.2, "route_table_ratio_100_vs_1": 0.95},
}
np99 = section["added_latency_us"]["nginx"]["p99"]
section["added_p99_ratio_vs_nginx"] = round(section["added_latency_us"]["strangler"]["p99"] / np99, 3) if np99 else None
data = {}
if os.path.exists(results):
    with open(results) as f:
        data = json.load(f)
data["strangler_proxy"] = section
with open(results, "w") as f:
    json.dump(data, f, indent=2)
    f.write("\n")
errors = sum(r["errors"] for r in section["runs"].values())
def verdict(value, target, higher=True):
    if value is None: return "n/a"
    return "meets target" if (value >= target if higher else value <= target) else "BELOW TARGET"
print()
print(f"{'':28}{'req/s':>10}{'p50 µs':>10}{'p99 µs':>10}{'CPU µs/req':>12}")
for name, run in section["runs"].items():
    cpu = run.get("cpu_us_per_request")
    print(f"{name:28}{run['rps']:>10.0f}{run['p50_us']:>10}{run['p99_us']:>10}{cpu if cpu is not None else '':>12}")
print()
t, r, a = section["throughput_ratio_vs_nginx"], section["route_table_ratio_100_vs_1"], section["added_p99_ratio_vs_nginx"]
print(f"throughput, strangler / nginx:        {t:.3f}  (target ≥ 0.90: {verdict(t, 0.9)})")
print(f"added p99, strangler / nginx:          {a if a is not None else 'n/a'}  (target ≤ 1.20: {verdict(a, 1.2, higher=False)})")
print(f"  added p50/p99 µs: nginx {section['added_latency_us']['nginx']['p50']}/{np99}, strangler {section['added_latency_us']['strangler']['p50']}/{section['added_latency_us']['strangler']['p99']}")
print(f"100 routes / 1 route:                  {r:.3f}  (target ≥ 0.95: {verdict(r, 0.95)})")
c = section["cpu_per_request_ratio_vs_nginx"]
print(f"CPU per request, strangler / nginx:    {c if c is not None else 'n/a'}  (lower is better)")
print(f"socket or status errors in all runs:   {errors}")
print(f"written to {results}")
PY
}

main "$@"
