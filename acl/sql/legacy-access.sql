-- What the anti-corruption layer may do in the legacy database, and the
-- publication its change feed reads. Run by a superuser inside `legacy`
-- once the monolith's schema exists: infra/local/before-acl.sh on
-- `make up`, the ACL's tests on each fresh test database. Idempotent.
--
-- Least privilege: the `acl` role reads the tables it translates, writes
-- only the rows sync-back carries (orders, their lines and payments), owns
-- the `acl` schema for its own bookkeeping, and has REPLICATION for its
-- logical slot. It cannot alter or drop legacy tables. REPLICATION is a
-- wider door than the grants (a slot of its own could decode any table in
-- this database): docs/adr/0013-legacy-change-capture.md, consequences.

DO $$ BEGIN
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO acl', current_database());
END $$;
-- Usually set already by infra/local/postgres.sh (a role attribute is
-- cluster-wide, and altering it from several sessions at once fails with
-- "tuple concurrently updated").
DO $$ BEGIN
    IF NOT (SELECT rolreplication FROM pg_roles WHERE rolname = 'acl') THEN
        ALTER ROLE acl REPLICATION;
    END IF;
END $$;

GRANT USAGE ON SCHEMA public TO acl;
GRANT SELECT ON tb_member, tb_shop, tb_menu, tb_rider, tb_order, tb_order_item,
    tb_payment, tb_delivery TO acl;
GRANT INSERT, UPDATE ON tb_order, tb_order_item, tb_payment TO acl;
-- Order numbers for the new side come from Baedal's own sequence
-- (docs/adr/0014-order-numbers.md); a payment row takes its id from its own.
GRANT USAGE, SELECT ON SEQUENCE sq_ord_no, tb_payment_pay_id_seq TO acl;

CREATE SCHEMA IF NOT EXISTS acl AUTHORIZATION acl;

-- Status changes name where they came from: the old row must be in the WAL.
-- A deleted menu item is announced with its shop, which only the full old
-- row carries.
ALTER TABLE tb_order REPLICA IDENTITY FULL;
ALTER TABLE tb_payment REPLICA IDENTITY FULL;
ALTER TABLE tb_delivery REPLICA IDENTITY FULL;
ALTER TABLE tb_menu REPLICA IDENTITY FULL;

-- Sync-back marks its transactions with a logical message the change feed
-- skips (loop prevention). Anyone may write such a message by default, and
-- so could silence the feed; in this database only the ACL may.
REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text),
    pg_logical_emit_message(boolean, text, bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text),
    pg_logical_emit_message(boolean, text, bytea) TO acl;

DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_publication WHERE pubname = 'acl_legacy') THEN
        CREATE PUBLICATION acl_legacy FOR TABLE tb_member, tb_shop, tb_menu,
            tb_order, tb_order_item, tb_payment, tb_delivery, tb_rider;
    END IF;
    -- Riders joined the publication with issue #15: a delivery fact names
    -- its rider from the rider row the same transaction writes.
    IF NOT EXISTS (SELECT FROM pg_publication_tables
                   WHERE pubname = 'acl_legacy' AND tablename = 'tb_rider') THEN
        ALTER PUBLICATION acl_legacy ADD TABLE tb_rider;
    END IF;
END $$;
