-- The strangler's own state: which plan is in force, each route's lifecycle
-- state, and the audit log of every change. Route definitions live in the
-- plan; states survive restarts here.

CREATE TABLE plan (
    id         BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),  -- one row
    source     TEXT        NOT NULL,
    applied_by TEXT        NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE route_state (
    route      TEXT        PRIMARY KEY,
    state      TEXT        NOT NULL CHECK (state IN ('legacy', 'shadow', 'canary', 'migrated', 'retired')),
    percent    SMALLINT    CHECK ((state = 'canary') = (percent IS NOT NULL) AND (percent IS NULL OR percent BETWEEN 1 AND 100)),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE audit_log (
    id         BIGSERIAL   PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    who        TEXT        NOT NULL,
    route      TEXT        NOT NULL,
    from_state TEXT        NOT NULL,
    to_state   TEXT        NOT NULL,
    reason     TEXT        NOT NULL
);

CREATE INDEX audit_log_route_at ON audit_log (route, at DESC);
