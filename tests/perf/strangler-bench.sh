#!/usr/bin/env bash
# Benchmark: the strangler against nginx, proxying the same backend on the
# same machine in the same run, measured with wrk. Results are ratios, merged
# into target/bench/results.json under "strangler_proxy".
#
#   throughput   64 connections: requests/s through each proxy, and direct
#   latency      4 connections (light load): p50/p99 added over direct
#   route table  the strangler with 100 routes vs 1 route
#
# Targets (ARCHITECTURE.md §15): throughput ≥ 0.9× nginx; added p99 ≤ 1.2×
# nginx's added p99; 100 routes ≥ 0.95× one route. The script reports; it
# does not fail on a missed target (timings are not pass/fail tests).
#
# BENCH_SECONDS (default 10) sets each measurement's length.

. "$(dirname "$0")/../../infra/local/lib.sh"

SECONDS_EACH=${BENCH_SECONDS:-10}
BENCH=$KIT_RUN/bench
RESULTS=${CARGO_TARGET_DIR:-$KIT_ROOT/target}/bench/results.json
BACKEND_PORT=${BENCH_BACKEND_PORT:-18090}
NGINX_PORT=${BENCH_NGINX_PORT:-18091}
STRANGLER_PORT=${BENCH_STRANGLER_PORT:-18092}
STRANGLER_ADMIN_PORT=${BENCH_STRANGLER_ADMIN_PORT:-18093}
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

start_strangler() {
	local plan=$1
	psql_admin -c "DROP DATABASE IF EXISTS $BENCH_DB" -c "CREATE DATABASE $BENCH_DB"
	(
		export STRANGLER_DATABASE__URL=${DATABASE_URL%/*}/$BENCH_DB
		export STRANGLER_HTTP__PORT=$STRANGLER_PORT STRANGLER_ADMIN__HTTP__PORT=$STRANGLER_ADMIN_PORT
		export STRANGLER_PLAN=$plan STRANGLER_TELEMETRY__FILTER=warn
		exec setsid "$KIT_ROOT/target/release/strangler" </dev/null >>"$BENCH/strangler.log" 2>&1
	) &
	echo $! >"$BENCH/strangler.pid"
	wait_for "strangler" 30 curl -fsS -o /dev/null "http://127.0.0.1:$STRANGLER_ADMIN_PORT/health/ready"
}

stop_all() {
	local pidfile
	for pidfile in "$BENCH"/*.pid; do
		[ -e "$pidfile" ] && stop_pid "$pidfile" 5
	done
	[ -n "${DATABASE_URL:-}" ] && psql_admin -c "DROP DATABASE IF EXISTS $BENCH_DB" 2>/dev/null || true
}

# wrk CONNECTIONS URL → one JSON line
measure() {
	local connections=$1 url=$2
	wrk -t1 -c"$connections" -d2s "$url" >/dev/null 2>&1 # warm-up: pools, caches
	wrk -t1 -c"$connections" -d"${SECONDS_EACH}s" -s "$KIT_ROOT/tests/perf/wrk-report.lua" "$url" 2>/dev/null | tail -n1
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

	local path=/api/r57/orders/20261122-000001
	local direct nginx one hundred direct_light nginx_light strangler_light
	step "direct to the backend"
	direct=$(measure 64 "http://127.0.0.1:$BACKEND_PORT$path")
	direct_light=$(measure 4 "http://127.0.0.1:$BACKEND_PORT$path")
	step "through nginx"
	nginx=$(measure 64 "http://127.0.0.1:$NGINX_PORT$path")
	nginx_light=$(measure 4 "http://127.0.0.1:$NGINX_PORT$path")
	step "through the strangler, 1 route"
	start_strangler "$(write_plan 1)"
	one=$(measure 64 "http://127.0.0.1:$STRANGLER_PORT$path")
	strangler_light=$(measure 4 "http://127.0.0.1:$STRANGLER_PORT$path")
	stop_pid "$BENCH/strangler.pid" 5
	step "through the strangler, 100 routes"
	start_strangler "$(write_plan 100)"
	hundred=$(measure 64 "http://127.0.0.1:$STRANGLER_PORT$path")

	python3 - "$RESULTS" "$SECONDS_EACH" "$direct" "$nginx" "$one" "$hundred" "$direct_light" "$nginx_light" "$strangler_light" <<'PY'
import json, os, sys, platform, datetime
results, seconds = sys.argv[1], int(sys.argv[2])
direct, nginx, one, hundred, direct_l, nginx_l, strangler_l = (json.loads(a) for a in sys.argv[3:10])
def added(run, base, p): return max(run[p] - base[p], 0)
section = {
    "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    "seconds_per_run": seconds,
    "runs": {"direct": direct, "nginx": nginx, "strangler_1_route": one, "strangler_100_routes": hundred,
             "direct_light": direct_l, "nginx_light": nginx_l, "strangler_light": strangler_l},
    "throughput_ratio_vs_nginx": round(one["rps"] / nginx["rps"], 3),
    "added_latency_us": {
        "nginx": {"p50": added(nginx_l, direct_l, "p50_us"), "p99": added(nginx_l, direct_l, "p99_us")},
        "strangler": {"p50": added(strangler_l, direct_l, "p50_us"), "p99": added(strangler_l, direct_l, "p99_us")},
    },
    "route_table_ratio_100_vs_1": round(hundred["rps"] / one["rps"], 3),
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
print(f"{'':28}{'req/s':>10}{'p50 µs':>10}{'p99 µs':>10}")
for name, run in section["runs"].items():
    print(f"{name:28}{run['rps']:>10.0f}{run['p50_us']:>10}{run['p99_us']:>10}")
print()
t, r, a = section["throughput_ratio_vs_nginx"], section["route_table_ratio_100_vs_1"], section["added_p99_ratio_vs_nginx"]
print(f"throughput, strangler / nginx:        {t:.3f}  (target ≥ 0.90: {verdict(t, 0.9)})")
print(f"added p99, strangler / nginx:          {a if a is not None else 'n/a'}  (target ≤ 1.20: {verdict(a, 1.2, higher=False)})")
print(f"  added p50/p99 µs: nginx {section['added_latency_us']['nginx']['p50']}/{np99}, strangler {section['added_latency_us']['strangler']['p50']}/{section['added_latency_us']['strangler']['p99']}")
print(f"100 routes / 1 route:                  {r:.3f}  (target ≥ 0.95: {verdict(r, 0.95)})")
print(f"socket or status errors in all runs:   {errors}")
print(f"written to {results}")
PY
}

main "$@"
