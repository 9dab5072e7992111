-- Outbox, step 2 (issue #13, docs/adr/0009-per-aggregate-order.md): every
-- row carries its aggregate's sequence number, 1, 2, 3 … in commit order.
-- Idempotent like step 1 (ADR 0006). Rows written before this step keep a
-- NULL sequence and are published without one.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS aggregate_seq bigint;
-- The last number given to each aggregate. `outbox::write` bumps it in the
-- writer's transaction, so the row stays locked until that transaction
-- ends: writers of one aggregate take turns, and a rollback gives the
-- number back (no gaps).
CREATE TABLE IF NOT EXISTS outbox_aggregate (
    aggregate_type  text    NOT NULL,
    aggregate_id    text    NOT NULL,
    last_seq        bigint  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);
