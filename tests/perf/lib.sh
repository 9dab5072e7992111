# What the benchmarks that run one `cargo bench` target share: the stack's
# infrastructure and environment, and merging the target's one-line JSON
# result into target/bench/results.json under a key of its own.

. "$(dirname "${BASH_SOURCE[0]}")/../../infra/local/lib.sh"

RESULTS=${CARGO_TARGET_DIR:-$KIT_ROOT/target}/bench/results.json

# PostgreSQL and RabbitMQ up, and their URLs in the environment.
bench_env() {
	mkdir -p "$(dirname "$RESULTS")"
	bash "$KIT_ROOT/infra/local/stack.sh" infra >/dev/null
	set -a
	# shellcheck disable=SC1091
	. "$KIT_STACK_ENV"
	set +a
}

# merge_result KEY JSON: stores JSON (with the time and the machine) under
# KEY in $RESULTS, keeping the other benchmarks' results.
merge_result() {
	python3 - "$RESULTS" "$1" "$2" <<'PY'
import json, os, sys, platform, datetime
results, key, line = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
line["when"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
line["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
data = {}
if os.path.exists(results):
    with open(results) as f:
        data = json.load(f)
data[key] = line
with open(results, "w") as f:
    json.dump(data, f, indent=2)
    f.write("\n")
PY
}
