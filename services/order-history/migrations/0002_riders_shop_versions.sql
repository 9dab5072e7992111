-- Riders' names, learnt from any fact or snapshot that carries one. Baedal
-- gives a waiting order to a rider who has just finished another without
-- writing the rider's row, so that fact names the rider by id only; the
-- read routes join this table, as Baedal joins tb_rider (ADR 0018).
CREATE TABLE rider (
    rider_id  bigint PRIMARY KEY,
    name      text NOT NULL
);

-- A shop's name is read from its owner when a read needs it and the name
-- is missing or stale, never inside the projection's transaction (a slow
-- owner must not hold facts up). `legacy.shop.changed.v1` bumps `version`;
-- a name read at `name_version` < `version` is stale, and a refresh that
-- raced a change does not clear it.
ALTER TABLE shop
    ALTER COLUMN name DROP NOT NULL,
    ADD COLUMN version bigint NOT NULL DEFAULT 0,
    ADD COLUMN name_version bigint NOT NULL DEFAULT 0;

-- The export pages by the byte order of order numbers: declared on the
-- column, the primary key serves it on any cluster's default collation.
ALTER TABLE order_view ALTER COLUMN order_no TYPE text COLLATE "C";
