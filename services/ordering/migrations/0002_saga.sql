-- The place-order saga's state, beside the order it drives and written in
-- the same transaction as every change to it (so a step and its order
-- never disagree after a crash). `saga_due`: when the sweeper takes the
-- order up if nothing moved it on (a gateway that never answered, a
-- process that died mid-step, a shop that never decided).
ALTER TABLE orders
    ADD COLUMN saga_step text NOT NULL DEFAULT 'done'
        CHECK (saga_step IN ('authorising', 'resolving', 'awaiting_decision', 'releasing', 'refunding', 'done')),
    ADD COLUMN saga_due timestamptz,
    ADD COLUMN saga_attempts integer NOT NULL DEFAULT 0 CHECK (saga_attempts >= 0),
    ADD CHECK ((saga_step = 'done') = (saga_due IS NULL));

CREATE INDEX orders_saga_due ON orders (saga_due) WHERE saga_due IS NOT NULL;
