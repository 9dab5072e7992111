-- order-history's store (issue #15): one row per order, the domain's
-- OrderView in columns a reader can query; the shops' and members' few
-- facts the legacy contract needs; and the import jobs.
--
-- A row with no status yet is an order heard of only through its payment
-- or delivery: kept (the facts are not lost) and not shown.

CREATE TABLE order_view (
    order_no             text PRIMARY KEY,
    member_id            bigint,
    shop_id              bigint,
    -- [{"menu_id", "name", "unit_price", "quantity"}], as ordered
    lines                jsonb,
    total_amount         bigint,
    delivery_address     text,
    request              text,
    placed_at            timestamptz,
    status               text,
    cancel_reason        text,
    payment_status       text,
    payment_amount       bigint,
    delivery_status      text,
    rider_id             bigint,
    rider_name           text,
    delivery_changed_at  timestamptz,
    -- when the owner last wrote the order itself, by its clock
    updated_at           timestamptz,
    -- the time of the latest fact applied
    changed_at           timestamptz,
    -- [{"status", "at"}], each status once, in time order
    timeline             jsonb NOT NULL DEFAULT '[]'
);

-- A member's history, newest first, as Baedal pages it.
CREATE INDEX order_view_by_member ON order_view (member_id, placed_at DESC, order_no DESC)
    WHERE status IS NOT NULL;

CREATE TABLE shop (
    shop_id       bigint PRIMARY KEY,
    name          text NOT NULL,
    refreshed_at  timestamptz NOT NULL DEFAULT now()
);

-- Members known to exist, so an empty history is told apart from an
-- unknown member without asking the owner each time.
CREATE TABLE member (
    member_id    bigint PRIMARY KEY,
    known_since  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE import_job (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('full', 'partial', 'fresh')),
    changed_since   timestamptz,
    reason          text NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'running', 'done', 'failed')),
    -- the last order number applied: where a resumed job goes on
    after_order_no  text,
    imported        bigint NOT NULL DEFAULT 0,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    error           text,
    CHECK ((kind = 'partial') = (changed_since IS NOT NULL))
);
CREATE INDEX import_job_unfinished ON import_job (id) WHERE state IN ('pending', 'running');
