-- The latest shadow mismatches per route: the request, both answers and
-- where they differ. The strangler keeps the newest N per route
-- (STRANGLER_PROXY__MISMATCHES_KEPT) and deletes the rest as it writes.

CREATE TABLE shadow_mismatch (
    id            BIGSERIAL   PRIMARY KEY,
    at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    route         TEXT        NOT NULL,
    method        TEXT        NOT NULL,
    target        TEXT        NOT NULL,   -- path and query
    request_id    TEXT        NOT NULL,
    legacy_status SMALLINT    NOT NULL,
    legacy_body   TEXT        NOT NULL,
    new_status    SMALLINT,               -- NULL: the new backend gave no answer
    new_body      TEXT        NOT NULL,
    new_error     TEXT,
    differences   JSONB       NOT NULL    -- [{"path", "legacy", "new"}]
);

CREATE INDEX shadow_mismatch_route_id ON shadow_mismatch (route, id DESC);
