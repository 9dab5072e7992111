-- Inbox, step 2 (issue #13, docs/adr/0009-per-aggregate-order.md): for a
-- consumer that applies events in aggregate order, the last sequence number
-- it applied for each aggregate of each producer, and the early messages it
-- parked. Idempotent (ADR 0006).
CREATE TABLE IF NOT EXISTS inbox_aggregate (
    consumer        text    NOT NULL,
    producer        text    NOT NULL,
    aggregate_type  text    NOT NULL,
    aggregate_id    text    NOT NULL,
    last_seq        bigint  NOT NULL,
    PRIMARY KEY (consumer, producer, aggregate_type, aggregate_id)
);
-- Messages that came before their aggregate's previous one, kept (and
-- acknowledged to the broker) until that one is applied.
CREATE TABLE IF NOT EXISTS inbox_parked (
    consumer        text         NOT NULL,
    producer        text         NOT NULL,
    aggregate_type  text         NOT NULL,
    aggregate_id    text         NOT NULL,
    seq             bigint       NOT NULL,
    envelope        jsonb        NOT NULL,
    payload         jsonb        NOT NULL,
    attempt         bigint       NOT NULL,
    parked_at       timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, producer, aggregate_type, aggregate_id, seq)
);
