-- A guard's trip whose rollback is not written yet. It is stored first, in a
-- statement of its own, so that when the rollback's transaction fails the
-- trip is still known: the next start of a strangler trips the route's guard
-- at once (its traffic goes to legacy) and writes the rollback again. Every
-- state change of the route (the rollback itself, or an operator's move)
-- deletes it in the same transaction.

CREATE TABLE guard_trip (
    route      TEXT        PRIMARY KEY,
    -- The state the failures were measured in: the trip applies only while
    -- the route is still in it.
    state      TEXT        NOT NULL,
    percent    SMALLINT,
    requests   BIGINT      NOT NULL,
    failures   BIGINT      NOT NULL,
    policy     JSONB       NOT NULL,   -- the guard's policy, for the reason
    tripped_at TIMESTAMPTZ NOT NULL DEFAULT now()   -- when first stored
);
