-- A member's cancel of a paid order is asked of Baedal's rows first
-- (docs/adr/0020-who-moves-the-money.md); the saga keeps the intent while
-- it asks, so an answer lost to a crash or a timeout is asked again.
ALTER TABLE orders DROP CONSTRAINT orders_saga_step_check;
ALTER TABLE orders ADD CONSTRAINT orders_saga_step_check
    CHECK (saga_step IN ('authorising', 'resolving', 'awaiting_decision', 'cancelling',
                         'releasing', 'refunding', 'done'));
