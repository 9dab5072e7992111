-- `make seed` empties Baedal's orders and restarts its order numbers; the
-- ACL's memory of which orders the new side placed must go with them, or a
-- reused number would be taken for an order sync-back already knows
-- (docs/adr/0014-order-numbers.md). The inbox's per-order positions stay:
-- the new side's sequence numbers go on counting. Run as a superuser in
-- `legacy` by `make seed`; does nothing before the ACL has run.
DO $$ BEGIN
    IF to_regclass('acl.sync_back_order') IS NOT NULL THEN
        TRUNCATE acl.sync_back_order, acl.sync_back_conflict;
    END IF;
END $$;
