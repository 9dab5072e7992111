-- The ACL's own bookkeeping inside the legacy database, in the `acl`
-- schema it owns (acl/sql/legacy-access.sql). Here, and not in the ACL's
-- own database, so that it is written in the same transaction as the
-- legacy rows sync-back writes. The chassis inbox (`acl.inbox`,
-- `acl.inbox_aggregate`, `acl.inbox_parked`) lives beside these tables.

-- Orders the ordering service placed, as sync-back received them. An order
-- waits here (written_at NULL) until it is paid or cancelled: only then is
-- it written to tb_order, in a state the monolith treats as settled.
CREATE TABLE acl.sync_back_order (
    order_no    text         PRIMARY KEY,
    -- ordering.order.placed.v1, as received.
    placed      jsonb        NOT NULL,
    received_at timestamptz  NOT NULL DEFAULT now(),
    -- When its rows were written to tb_order, tb_order_item, tb_payment.
    written_at  timestamptz
);

-- Facts of the new side that sync-back did not write because the monolith
-- had already moved the order on (the shop accepted it while the member
-- cancelled in ordering): the legacy state stands; a person, or
-- reconciliation, settles the difference.
CREATE TABLE acl.sync_back_conflict (
    id            bigserial    PRIMARY KEY,
    order_no      text         NOT NULL,
    event_name    text         NOT NULL,
    message_id    uuid         NOT NULL,
    -- tb_order.ord_stat_cd when the fact came.
    legacy_status text         NOT NULL,
    detail        text         NOT NULL,
    recorded_at   timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX sync_back_conflict_order ON acl.sync_back_conflict (order_no);
