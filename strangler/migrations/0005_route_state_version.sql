-- Every write of a route's state bumps its version, so that a write made
-- from what an instance saw earlier (a guard's trip, measured on the canary
-- that instance knew) can insist the route has not moved since: several
-- instances share this table, and a route rolled back and advanced again
-- is in the same (state, percent) but a different canary.

ALTER TABLE route_state ADD COLUMN version BIGINT NOT NULL DEFAULT 1;

-- A pending trip names the version it was measured in. Trips stored before
-- versions existed matched on (state, percent): those that still match take
-- the route's version, the others no longer apply.
ALTER TABLE guard_trip ADD COLUMN version BIGINT;
UPDATE guard_trip t SET version = s.version FROM route_state s
WHERE s.route = t.route AND s.state = t.state AND s.percent IS NOT DISTINCT FROM t.percent;
DELETE FROM guard_trip WHERE version IS NULL;
ALTER TABLE guard_trip ALTER COLUMN version SET NOT NULL;
