-- Ordering's own cancel of its paid order, as the ACL applied it to the
-- legacy rows (POST /v1/ordering/orders/{order_no}/cancel): the reason it
-- applied. A cancel asked again, for whatever reason, is answered with
-- this one (the first cancel won; ordering refunds it once), and a `90`
-- without it is Baedal's own (a member's cancel there, which Baedal
-- refunds). docs/adr/0020-who-moves-the-money.md.
ALTER TABLE acl.sync_back_order
    ADD COLUMN cancelled_by_ordering text
        CHECK (cancelled_by_ordering IN ('member', 'no_decision'));
