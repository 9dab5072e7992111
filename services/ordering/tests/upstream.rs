//! What ordering asks upstream, through the real ACL in front of a real
//! Baedal (the ACL tests' rig): shops, menus and members as the ordering
//! language holds them, checked against Baedal's own rows; prices as they
//! stand now, not from a cache; order numbers from the one sequence both
//! sides share.

#[path = "../../../acl/tests/support/mod.rs"]
mod legacy;

use chassis::http_client::{ClientMetrics, DependencySettings};
use legacy::Rig;
use ordering::adapters::outbound::acl::AclUpstream;
use ordering::application::ports::Upstream;
use ordering::domain::{MinuteOfDay, OpeningHours};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

fn upstream(url: &str) -> AclUpstream {
    AclUpstream::new(url, DependencySettings::default(), ClientMetrics::default())
        .expect("a client")
}

fn hhmm(text: &str) -> MinuteOfDay {
    MinuteOfDay::parse_hhmm(text).expect("a time")
}

#[sqlx::test(migrations = false)]
async fn shops_menus_and_members_come_as_baedal_holds_them(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let acl = rig.start_acl(rig.acl_settings()).await;
    let upstream = upstream(&acl.url);

    let (open, close, minimum): (String, String, i32) =
        sqlx::query_as("SELECT open_hm, close_hm, min_ord_amt FROM tb_shop WHERE shop_id = 1")
            .fetch_one(&rig.legacy_admin)
            .await
            .expect("shop 1");
    let shop = upstream.shop(1).await.expect("an answer").expect("shop 1");
    assert_eq!(
        (shop.shop_id, shop.hours, shop.minimum.amount()),
        (
            1,
            OpeningHours {
                open: hhmm(&open),
                close: hhmm(&close)
            },
            i64::from(minimum)
        )
    );

    let rows: Vec<(i64, String, i32, String)> = sqlx::query_as(
        "SELECT menu_id, menu_nm, price, sale_yn FROM tb_menu WHERE shop_id = 1 ORDER BY menu_id",
    )
    .fetch_all(&rig.legacy_admin)
    .await
    .expect("shop 1's menu");
    let menu = upstream.menu(1).await.expect("an answer");
    assert!(!rows.is_empty());
    assert_eq!(
        menu.iter()
            .map(|m| (
                m.menu_id,
                m.name.clone(),
                m.price.amount(),
                m.on_sale,
                m.shop_id
            ))
            .collect::<Vec<_>>(),
        rows.iter()
            .map(|(id, name, price, sale)| (*id, name.clone(), i64::from(*price), sale == "Y", 1))
            .collect::<Vec<_>>()
    );

    let address: String = sqlx::query_scalar("SELECT addr FROM tb_member WHERE mbr_id = 1")
        .fetch_one(&rig.legacy_admin)
        .await
        .expect("member 1");
    assert_eq!(upstream.member_address(1).await, Ok(Some(address)));

    // Nothing in use by these ids: an answer, not a failure.
    assert_eq!(upstream.shop(999_999).await, Ok(None));
    assert_eq!(upstream.shop(0).await, Ok(None));
    assert_eq!(upstream.member_address(-1).await, Ok(None));
    assert_eq!(upstream.menu(999_999).await, Ok(vec![]));
    assert_eq!(upstream.member_address(999_999).await, Ok(None));
    sqlx::query("UPDATE tb_shop SET use_yn = 'N' WHERE shop_id = 1")
        .execute(&rig.legacy_admin)
        .await
        .expect("shop 1 closes for good");
    assert_eq!(upstream.shop(1).await, Ok(None), "a shop no longer in use");
    acl.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_price_changed_a_moment_ago_is_the_price_an_order_gets(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let acl = rig.start_acl(rig.acl_settings()).await;
    let upstream = upstream(&acl.url);
    let price = |menu: &[ordering::domain::MenuItem]| {
        menu.iter()
            .find(|m| m.menu_id == 1)
            .map(|m| m.price.amount())
    };
    let before = price(&upstream.menu(1).await.expect("an answer")).expect("menu item 1");
    sqlx::query("UPDATE tb_menu SET price = price + 1000 WHERE menu_id = 1")
        .execute(&rig.legacy_admin)
        .await
        .expect("a new price");
    assert_eq!(
        price(&upstream.menu(1).await.expect("an answer")),
        Some(before + 1000)
    );
    acl.stop().await;
    rig.finish().await;
}

#[sqlx::test(migrations = false)]
async fn order_numbers_come_from_the_sequence_baedal_numbers_its_own_from(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let rig = Rig::start(&options).await;
    let acl = rig.start_acl(rig.acl_settings()).await;
    let upstream = upstream(&acl.url);
    let sequence = |order_no: &str| -> u64 {
        order_no
            .split_once('-')
            .and_then(|(_, n)| n.parse().ok())
            .expect("a sequence part")
    };
    let first = upstream.next_order_no().await.expect("a number");
    let baedals = rig.place_order().await;
    let second = upstream.next_order_no().await.expect("a number");
    assert_eq!(
        (
            sequence(baedals.as_str()) - sequence(first.as_str()),
            sequence(second.as_str()) - sequence(baedals.as_str())
        ),
        (1, 1),
        "{first} < {baedals} < {second}, one sequence"
    );
    assert_eq!(
        &first.as_str()[..8],
        &baedals[..8],
        "the same day, Korean time"
    );
    acl.stop().await;
    rig.finish().await;
}

#[tokio::test]
async fn an_acl_that_does_not_answer_is_unavailable_not_an_empty_catalog() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    drop(listener);
    let upstream = AclUpstream::new(
        &url,
        DependencySettings {
            retries: 0,
            ..DependencySettings::default()
        },
        ClientMetrics::default(),
    )
    .expect("a client");
    assert!(upstream.shop(1).await.is_err());
    assert!(upstream.menu(1).await.is_err());
    assert!(upstream.member_address(1).await.is_err());
    assert!(upstream.next_order_no().await.is_err());
}
