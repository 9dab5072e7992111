//! The server-rendered pages, driven like a browser without JavaScript:
//! forms post, the answer is a 303 to the page that shows the result.

mod support;

use reqwest::redirect::Policy;
use reqwest::{Client, StatusCode};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::{Baedal, sandbox};

fn browser() -> Client {
    Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("a client")
}

async fn html(baedal: &Baedal, path: &str) -> (StatusCode, String) {
    let response = browser()
        .get(format!("{}{path}", baedal.url))
        .send()
        .await
        .expect("reaches Baedal");
    let status = response.status();
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("an ASCII content type")
        .to_owned();
    assert!(
        content_type.starts_with("text/html"),
        "{path}: {content_type}"
    );
    (status, response.text().await.expect("a body"))
}

async fn submit(baedal: &Baedal, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    browser()
        .post(format!("{}{path}", baedal.url))
        .form(form)
        .send()
        .await
        .expect("reaches Baedal")
}

fn location(response: &reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    response.headers()["location"]
        .to_str()
        .expect("an ASCII location")
        .to_owned()
}

#[sqlx::test(migrations = false)]
async fn the_shop_list_and_a_menu_show_the_seeded_shops(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let baedal = Baedal::start(&options, &sandbox().await).await;
    let (status, list) = html(&baedal, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(list.contains("한옥집 김치찌개") && list.contains("교촌식 치킨"));
    let (_, chicken) = html(&baedal, "/?category=CHICKEN").await;
    assert!(chicken.contains("바삭 치킨") && !chicken.contains("나폴리 피자"));
    let (status, menu) = html(&baedal, "/shops/4").await;
    assert_eq!(status, StatusCode::OK);
    assert!(menu.contains("후라이드") && menu.contains("name=\"qty_31\""));
    // Prices as Koreans write them, and sides priced like sides.
    assert!(menu.contains("최소주문 18,000원"), "{menu}");
    let row = |name: &str| {
        menu.split("<tr")
            .find(|row| row.contains(name))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(row("치킨무").contains(">500원<"), "{}", row("치킨무"));
    assert!(
        row("콜라 1.25L").contains(">2,500원<"),
        "{}",
        row("콜라 1.25L")
    );
    assert!(row("감자튀김").contains(">3,500원<"), "{}", row("감자튀김"));
    let (status, missing) = html(&baedal, "/shops/9999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(missing.contains("There is no shop 9999."));
}

#[sqlx::test(migrations = false)]
async fn an_order_placed_through_the_form_is_tracked_accepted_and_delivered(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let baedal = Baedal::start(&options, &sandbox().await).await;
    let form = [
        ("member_id", "7"),
        ("qty_1", "2"),
        ("qty_2", "1"),
        ("qty_3", "0"),
        ("form_token", "t-1"),
    ];
    let placed = submit(&baedal, "/shops/1/order", &form).await;
    let tracking = location(&placed);
    // The same form sent twice (a double click) places one order.
    let again = submit(&baedal, "/shops/1/order", &form).await;
    assert_eq!(location(&again), tracking);
    assert_eq!(baedal.count("tb_order").await, 1);

    let (_, page) = html(&baedal, &tracking).await;
    assert!(page.contains("PAID") && page.contains("28,500원"), "{page}");
    assert!(
        page.contains("11,000원") && page.contains("22,000원"),
        "unit price and line amount"
    );
    let ord_no = tracking.trim_start_matches("/orders/");

    let accepted = submit(
        &baedal,
        &format!("/owner/shops/1/orders/{ord_no}/accept"),
        &[],
    )
    .await;
    assert_eq!(location(&accepted), "/owner/shops/1");
    let (_, board) = html(&baedal, "/owner/shops/1").await;
    assert!(board.contains(ord_no) && board.contains("ACCEPTED"));
    // A second decision is refused on the board itself.
    let late = submit(
        &baedal,
        &format!("/owner/shops/1/orders/{ord_no}/reject"),
        &[],
    )
    .await;
    assert_eq!(late.status(), StatusCode::CONFLICT);
    assert!(
        late.text()
            .await
            .unwrap()
            .contains("only a paid order can be accepted or rejected")
    );

    let (_, rider) = html(&baedal, "/riders/1").await;
    assert!(rider.contains(ord_no));
    location(
        &submit(
            &baedal,
            &format!("/riders/1/deliveries/{ord_no}/pickup"),
            &[],
        )
        .await,
    );
    location(
        &submit(
            &baedal,
            &format!("/riders/1/deliveries/{ord_no}/deliver"),
            &[],
        )
        .await,
    );
    let (_, done) = html(&baedal, &tracking).await;
    assert!(done.contains("DELIVERED"));
}

#[sqlx::test(migrations = false)]
async fn a_script_in_an_address_is_shown_escaped(_: PgPoolOptions, options: PgConnectOptions) {
    let baedal = Baedal::start(&options, &sandbox().await).await;
    sqlx::query("UPDATE tb_member SET addr = '<script>alert(\"x\")</script> 1길' WHERE mbr_id = 5")
        .execute(&baedal.db)
        .await
        .unwrap();
    let placed = submit(
        &baedal,
        "/shops/1/order",
        &[("member_id", "5"), ("qty_1", "2"), ("qty_2", "1")],
    )
    .await;
    let tracking = location(&placed);
    let (_, page) = html(&baedal, &tracking).await;
    assert!(!page.contains("<script>alert"), "the address is escaped");
    assert!(page.contains("&#60;script&#62;") || page.contains("&lt;script&gt;"));
}

#[sqlx::test(migrations = false)]
async fn form_mistakes_are_shown_on_the_page_and_write_nothing(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let baedal = Baedal::start(&options, &sandbox().await).await;
    for (form, message) in [
        (
            vec![("member_id", ""), ("qty_1", "2")],
            "Enter your member number.",
        ),
        (vec![("member_id", "1"), ("qty_1", "two")], "whole numbers"),
        (vec![("member_id", "1"), ("qty_10", "1")], "delivers from"),
    ] {
        let response = submit(&baedal, "/shops/1/order", &form).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let page = response.text().await.unwrap();
        assert!(
            page.contains("role=\"alert\"") && page.contains(message),
            "{message}"
        );
    }
    assert_eq!(baedal.count("tb_order").await, 0);
}
