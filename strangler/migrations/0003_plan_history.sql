-- Every plan ever applied, with who, when, why and what it changed against
-- the plan before it (a JSON diff: routes and backends added, removed and
-- changed, and the state changes it made). `plan` keeps the one in force.

CREATE TABLE plan_history (
    id         BIGSERIAL   PRIMARY KEY,
    source     TEXT        NOT NULL,
    applied_by TEXT        NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    reason     TEXT        NOT NULL,
    diff       JSONB       NOT NULL
);

-- The plan in force until now had no history: it becomes the first entry.
INSERT INTO plan_history (source, applied_by, applied_at, reason, diff)
SELECT source, applied_by, applied_at, 'in force when the plan history began', '{}'::jsonb
FROM plan;
