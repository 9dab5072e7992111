//! The demo data: loaded by the migrations, restored by `make seed`.

mod support;

use reqwest::StatusCode;
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::{Baedal, body, sandbox};

#[sqlx::test(migrations = false)]
async fn reseeding_restores_the_demo_data(_: PgPoolOptions, options: PgConnectOptions) {
    let baedal = Baedal::start(&options, &sandbox().await).await;
    let placed = baedal.post("/api/orders", &baedal.order()).await;
    assert_eq!(placed.status(), StatusCode::CREATED);
    sqlx::query("UPDATE tb_shop SET shop_nm = 'renamed' WHERE shop_id = 1")
        .execute(&baedal.db)
        .await
        .unwrap();
    monolith::reseed(options.to_url_lossy().as_str())
        .await
        .unwrap();
    assert_eq!(baedal.count("tb_order").await, 0);
    let shops: Vec<(i64, String)> =
        sqlx::query_as("SELECT shop_id, shop_nm FROM tb_shop ORDER BY shop_id")
            .fetch_all(&baedal.db)
            .await
            .unwrap();
    assert_eq!(shops.len(), 24);
    assert_eq!(shops[0], (1, "한옥집 김치찌개".to_owned()));
    let menus: i64 = sqlx::query_scalar("SELECT count(*) FROM tb_menu")
        .fetch_one(&baedal.db)
        .await
        .unwrap();
    assert_eq!(menus, 240);
    // The sides' and drinks' prices (migration 0003) come back with it.
    let sides: Vec<(String, i32)> = sqlx::query_as(
        "SELECT DISTINCT menu_nm, price FROM tb_menu
         WHERE menu_nm IN ('치킨무', '콜라 1.25L', '공기밥') ORDER BY menu_nm",
    )
    .fetch_all(&baedal.db)
    .await
    .unwrap();
    assert_eq!(
        sides,
        [
            ("공기밥".to_owned(), 1000),
            ("치킨무".to_owned(), 500),
            ("콜라 1.25L".to_owned(), 2500)
        ]
    );
    let again = body(baedal.post("/api/orders", &baedal.order()).await).await;
    assert!(again["order_no"].as_str().unwrap().ends_with("-000001"));
}
