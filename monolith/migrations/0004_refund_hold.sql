-- A refund the gateway says it does not know (issue #20): after the payment
-- sandbox lost its ledger in a restart, the sweeper asked for such refunds
-- every 10 s for ever. Now each "no such payment" answer is counted, and
-- after BAEDAL_PG_UNKNOWN_REFUND_TRIES of them the refund is put on hold:
-- still owed (pay_stat_cd stays RFND_REQ, which is the truth), but no longer
-- retried, for a person to settle with the gateway. Existing rows start at
-- zero tries and not on hold.
ALTER TABLE tb_payment
    ADD COLUMN rfnd_try_cnt integer NOT NULL DEFAULT 0,
    ADD COLUMN rfnd_hold_yn char(1) NOT NULL DEFAULT 'N' CHECK (rfnd_hold_yn IN ('Y', 'N'));

COMMENT ON COLUMN tb_payment.rfnd_try_cnt IS 'refund attempts the gateway answered "no such payment"';
COMMENT ON COLUMN tb_payment.rfnd_hold_yn IS 'Y: refund owed but parked (the gateway does not know the payment); the sweeper leaves it';
