-- The answers to `POST /api/orders`, per member and `Idempotency-Key`, as
-- Baedal keeps them in `tb_idem_req`: a retry with the same key and body
-- gets the first answer again, byte for byte; the same key with another
-- body is refused. `status` and `body` are empty while the first request
-- runs; a request a rule refused leaves no row (nothing was placed).
CREATE TABLE idempotency_keys (
    member_id    bigint       NOT NULL,
    key          text         NOT NULL COLLATE "C" CHECK (length(key) BETWEEN 1 AND 100),
    -- The request's fingerprint (Baedal's: FNV-1a of its canonical JSON).
    fingerprint  text         NOT NULL,
    status       smallint     CHECK (status BETWEEN 100 AND 599),
    body         text,
    claimed_at   timestamptz  NOT NULL DEFAULT now(),
    answered_at  timestamptz,
    PRIMARY KEY (member_id, key),
    CHECK ((status IS NULL) = (body IS NULL)),
    CHECK ((status IS NULL) = (answered_at IS NULL))
);
