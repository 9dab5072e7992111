-- Outbox, step 3 (issue #13): a row the relay cannot publish (an envelope
-- that does not parse, a payload over the broker's size limit) is set
-- aside with the reason instead of failing every batch it is in. Pending
-- rows are the unpublished ones not set aside. Idempotent (ADR 0006).
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS failed_at timestamptz;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS failure text;
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (id)
    WHERE published_at IS NULL AND failed_at IS NULL;
