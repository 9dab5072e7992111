//! Least privilege in the legacy database: what acl/sql/legacy-access.sql
//! lets the `acl` role do there, and what it still cannot do.

mod support;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::Rig;

/// SQLSTATE 42501, insufficient_privilege.
const REFUSED: &str = "42501";

async fn refusal(rig: &Rig, sql: &'static str) -> Option<String> {
    match sqlx::query(sql).execute(&rig.legacy).await {
        Ok(_) => None,
        Err(sqlx::Error::Database(e)) => e.code().map(|c| c.into_owned()),
        Err(other) => panic!("{sql}: {other}"),
    }
}

#[sqlx::test(migrations = false)]
async fn the_acl_role_reads_legacy_writes_only_what_sync_back_carries_and_owns_its_schema(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let replication: bool =
        sqlx::query_scalar("SELECT rolreplication FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&rig.legacy)
            .await
            .expect("its role");
    assert!(replication, "the acl role owns a replication slot");
    for allowed in [
        "SELECT count(*) FROM tb_order JOIN tb_order_item USING (ord_no)",
        "SELECT count(*) FROM tb_shop JOIN tb_menu USING (shop_id)",
        "SELECT count(*) FROM tb_member",
        "SELECT count(*) FROM tb_delivery JOIN tb_rider USING (rider_id)",
        "UPDATE tb_order SET upd_dt = upd_dt WHERE false",
        "SELECT ord_no FROM tb_order WHERE false FOR UPDATE",
        "SELECT nextval('sq_ord_no')",
        "SELECT nextval('tb_payment_pay_id_seq')",
        "CREATE TABLE acl.scratch (id int)",
    ] {
        assert_eq!(refusal(&rig, allowed).await, None, "{allowed}");
    }
    for refused in [
        "DELETE FROM tb_order",
        "TRUNCATE tb_order_item",
        "UPDATE tb_shop SET upd_dt = now()",
        "UPDATE tb_menu SET price = 1",
        "INSERT INTO tb_member (mbr_nm, tel_no, addr) VALUES ('x', 'x', 'x')",
        "SELECT count(*) FROM tb_idem_req",
        "ALTER TABLE tb_order ADD COLUMN x int",
        "DROP TABLE tb_payment",
        "SELECT setval('sq_ord_no', 1)",
        "SELECT nextval('tb_member_mbr_id_seq')",
        "SELECT shop_id FROM tb_shop WHERE false FOR UPDATE",
        "CREATE TABLE public.scratch (id int)",
    ] {
        assert_eq!(
            refusal(&rig, refused).await.as_deref(),
            Some(REFUSED),
            "{refused}"
        );
    }
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn only_the_acl_may_write_the_marker_that_silences_the_feed(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let legacy_url: PgConnectOptions = support::env("KIT_DB_URL_LEGACY").parse().expect("a URL");
    let database = options.get_database().expect("the test database");
    let as_monolith = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(legacy_url.database(database))
        .await
        .expect("the legacy role reaches the test database");
    let marker = "SELECT pg_logical_emit_message(true, 'acl.sync-back', 'x')";
    let refused = sqlx::query(marker)
        .execute(&as_monolith)
        .await
        .expect_err("the monolith's role may not write it");
    assert_eq!(
        refused
            .as_database_error()
            .and_then(|e| e.code())
            .as_deref(),
        Some(REFUSED)
    );
    assert_eq!(refusal(&rig, marker).await, None, "the acl role may");
    as_monolith.close().await;
    rig.finish().await;
}
