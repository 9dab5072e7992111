-- The local stack only (infra/local/before-acl.sh, as a superuser in
-- `legacy`): the ACL's slot lost while the ACL was stopped and the cluster
-- busy (`make test` or `make bench` write more WAL than
-- max_slot_wal_keep_size) would keep `make up` from ever getting ready.
-- Locally nothing depends on what the lost WAL held, so the slot is dropped
-- here (before the ACL starts, or while a running one fails on it): the ACL
-- creates a new one and announces legacy.feed.restarted. The name is the
-- default slot's (ACL_CAPTURE__SLOT unset, as on the local stack). Anywhere else this is a person's decision: the
-- runbook in docs/patterns/log-tailing.md.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_replication_slots
               WHERE slot_name = 'acl_legacy' AND wal_status = 'lost' AND NOT active) THEN
        PERFORM pg_drop_replication_slot('acl_legacy');
        RAISE WARNING 'the ACL''s replication slot acl_legacy was lost (more WAL than max_slot_wal_keep_size was written while the ACL was not reading it); dropped it: the ACL starts a new slot and announces legacy.feed.restarted (docs/patterns/log-tailing.md, runbook)';
    END IF;
END $$;
