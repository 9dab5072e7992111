#!/usr/bin/env bash
# Benchmark: placing an order through the strangler with the route
# `migrated` (the ordering service) vs `legacy` (Baedal), same machine,
# same payment sandbox at zero latency, in one run; and ordering's
# database work vs pgbench running the same inserts
# (services/ordering/benches/placement.rs). Merges the result into
# target/bench/results.json under "ordering_placement". Targets (issue 16):
# throughput migrated / legacy ≥ 1.0; database work / pgbench ≥ 0.7.
# The script reports; it does not fail on a missed target.
#
# BENCH_SECONDS (default 5) sets each measurement's length, BENCH_ROUNDS
# (default 3) the number of rounds. ORDERING_CATALOG__FRESH_FOR_MS sets
# ordering's catalog copy as the service reads it (0: no copy, ADR 0023),
# ACL_SYNC_BACK__CONSUMERS sync-back's consumers (default 4).

. "$(dirname "$0")/lib.sh"

main() {
	bench_env
	PG_BIN=$(find_pg_bin)
	[ -n "$PG_BIN" ] && [ -x "$PG_BIN/pgbench" ] || die "the benchmark needs pgbench, beside initdb in PostgreSQL's bin folder (apt-get install postgresql-15; PG_BIN names the folder)"
	export PG_BIN
	BENCH_CLK_TCK=$(getconf CLK_TCK)
	export BENCH_CLK_TCK
	step "order placement: through the strangler, migrated vs legacy; the store vs pgbench (release build)"
	local line
	line=$(cd "$KIT_ROOT" && cargo bench --quiet -p ordering --bench placement | tail -n1) || die "the placement benchmark failed"
	merge_result ordering_placement "$line"
	python3 - "$line" "$RESULTS" <<'PY'
import json, sys
line, results = json.loads(sys.argv[1]), sys.argv[2]
p, d = line["placement"], line["database_work"]
def num(value, spec):
    return format(value, spec) if value is not None else "n/a"
def verdict(value, target):
    if value is None: return "n/a"
    return "meets target" if value >= target else "BELOW TARGET"
copy = p.get("catalog_copy_fresh_for_ms")
print(f"ordering's catalog copy: {'off (every placement asks the ACL)' if copy == 0 else f'fresh for {copy} ms'}; sync-back consumers: {p.get('sync_back_consumers')}")
print(f"closed loop, {line['clients']} clients  {'orders/s':>10}{'completed/s':>13}{'CPU ms/order':>14}{'… settled':>11}{'settle ms':>11}{'errors':>8}{'valid':>7}")
for side in ("legacy", "migrated"):
    t = p[side]["throughput"]
    print(f"  {side:<28}{num(t['rps'], '>10.1f')}{num(t.get('completed_per_s'), '>13.1f')}{num(t['cpu_ms_per_placement'], '>14.2f')}{num(t.get('cpu_ms_per_placement_until_settled'), '>11.2f')}{num(t.get('settled_after_ms'), '>11.0f')}{t['errors']:>8}{str(t['all_valid']):>7}")
print("CPU ms per placement until settled, by process")
for side in ("legacy", "migrated"):
    parts = p[side]["throughput"].get("cpu_ms_per_placement_until_settled_by_process", {})
    print(f"  {side:<28}" + "  ".join(f"{name} {num(value, '.2f')}" for name, value in parts.items()))
print(f"open loop at {p['open_loop_rate_per_s']:.0f} orders/s   {'p50 µs':>10}{'p99 µs':>14}{'errors':>8}{'valid':>7}")
for side in ("legacy", "migrated"):
    l = p[side]["latency_at_fixed_rate"]
    print(f"  {side:<28}{num(l['p50_us'], '>10.0f')}{num(l['p99_us'], '>14.0f')}{l['errors']:>8}{str(l['all_valid']):>7}")
t = p["throughput_ratio_migrated_vs_legacy"]
print(f"throughput, migrated / legacy:        {num(t, '.3f')}  (target ≥ 1.0: {verdict(t, 1.0)})")
print(f"orders completed (every effect done) per second, migrated / legacy: {num(p.get('completed_ratio_migrated_vs_legacy'), '.3f')}")
print(f"CPU per placement, migrated / legacy: {num(p['cpu_per_placement_ratio_migrated_vs_legacy'], '.3f')} while answering, {num(p.get('cpu_until_settled_per_placement_ratio_migrated_vs_legacy'), '.3f')} until the work left behind is done")
print(f"p99 at a fixed rate, migrated / legacy: {num(p['p99_ratio_migrated_vs_legacy'], '.3f')}")
r = d["ratio_ordering_vs_pgbench"]
print(f"store: {d['ordering_placements_per_s']:.0f} placements/s, pgbench {d['pgbench_placements_per_s']:.0f} (rounds {d['rounds']})")
c = d.get("cpu_ms_per_placement")
if c:
    for who in ("ordering", "pgbench"):
        print(f"  CPU ms per placement, {who:<9} PostgreSQL {c[who]['postgres']:.3f}, client and the rest {c[who]['client_and_rest']:.3f}")
print(f"database work, ordering / pgbench:    {num(r, '.3f')}  (target ≥ 0.7: {verdict(r, 0.7)})")
print(f"written to {results}")
PY
}

main "$@"
