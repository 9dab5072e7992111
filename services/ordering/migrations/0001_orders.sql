-- ordering's own database (one role, `ordering`): its orders and their
-- lines. The outbox beside them is the chassis' (installed at start), so an
-- order and the facts its change caused commit together.
CREATE TABLE orders (
    order_no      text         PRIMARY KEY COLLATE "C",
    member_id     bigint       NOT NULL,
    shop_id       bigint       NOT NULL,
    total_won     bigint       NOT NULL CHECK (total_won >= 0),
    address       text         NOT NULL,
    request       text,
    status        text         NOT NULL
        CHECK (status IN ('placed', 'paid', 'accepted', 'picked_up', 'delivered', 'rejected', 'cancelled')),
    payment_id    text,
    cancel_reason text
        CHECK (cancel_reason IN ('member', 'payment_declined', 'payment_failed', 'no_decision')),
    -- owed: ordering gives it back; by_legacy: Baedal decided and gives it
    -- back with its own code (docs/adr/0020-who-moves-the-money.md).
    refund        text         NOT NULL CHECK (refund IN ('not_owed', 'owed', 'by_legacy', 'refunded')),
    placed_at     timestamptz  NOT NULL,
    updated_at    timestamptz  NOT NULL,
    -- Bumped by every change: a writer that read an older version loses
    -- (optimistic locking), so no change overwrites one it did not see.
    version       bigint       NOT NULL DEFAULT 1 CHECK (version >= 1),
    -- What the status machine can reach (the domain's `Order::restore`
    -- checks the rest): a reason with a cancel only, no payment before one.
    CHECK ((status = 'cancelled') = (cancel_reason IS NOT NULL)),
    CHECK (status <> 'placed' OR (payment_id IS NULL AND refund = 'not_owed')),
    CHECK (updated_at >= placed_at)
);

CREATE INDEX orders_by_member ON orders (member_id, placed_at DESC, order_no DESC);

CREATE TABLE order_lines (
    order_no        text      NOT NULL REFERENCES orders ON DELETE CASCADE,
    line_no         smallint  NOT NULL CHECK (line_no >= 1),
    menu_id         bigint    NOT NULL,
    name            text      NOT NULL,
    unit_price_won  bigint    NOT NULL CHECK (unit_price_won >= 0),
    quantity        smallint  NOT NULL CHECK (quantity BETWEEN 1 AND 99),
    PRIMARY KEY (order_no, line_no)
);
