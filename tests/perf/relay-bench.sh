#!/usr/bin/env bash
# Benchmark: the outbox relay against a bare lapin publisher with confirms,
# in the same run on the same broker (services/chassis/benches/relay.rs).
# Merges the result into target/bench/results.json under "outbox_relay".
# Target (ARCHITECTURE.md §15): relay ≥ 0.5× the bare publisher, for rows
# without and with per-aggregate sequence numbers. The script reports; it
# does not fail on a missed target.

. "$(dirname "$0")/lib.sh"

main() {
	bench_env
	step "outbox relay vs bare lapin publisher (release build)"
	local line
	line=$(cd "$KIT_ROOT" && cargo bench --quiet -p chassis --bench relay | tail -n1) || die "the relay benchmark failed"
	merge_result outbox_relay "$line"
	python3 - "$RESULTS" "$line" <<'PY'
import json, sys
results, line = sys.argv[1], json.loads(sys.argv[2])
r = line["relay_ratio_vs_bare"]
print(f"bare lapin publisher:   {line['bare_lapin_events_per_s']:>8.0f} events/s")
print(f"outbox relay:           {line['outbox_relay_events_per_s']:>8.0f} events/s")
print(f"relay / bare:           {r:.3f}  (target ≥ 0.50: {'meets target' if r >= 0.5 else 'BELOW TARGET'})")
rs = line["relay_sequenced_ratio_vs_bare"]
print(f"relay, sequenced rows:  {line['outbox_relay_sequenced_events_per_s']:>8.0f} events/s")
print(f"sequenced / bare:       {rs:.3f}  (target ≥ 0.50: {'meets target' if rs >= 0.5 else 'BELOW TARGET'})")
print(f"written to {results}")
PY
}

main "$@"
