//! Server-rendered pages: plain HTML forms that work without JavaScript.
//! Every form posts, then redirects (303) to the page that shows the
//! result, so a reload never repeats an action; a failure is shown on the
//! page it came from. askama escapes every value it prints.

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::AppState;
use crate::error::Fail;
use crate::fulfilment::{self, BoardEntry, Decision, RiderBoard, RiderStep};
use crate::orders::{self, OrderLine, OrderSummary, OrderView, Page, PlaceOrder};
use crate::shops::{self, CATEGORIES, Shop, ShopWithMenu};

/// Filters the templates use.
mod filters {
    /// An amount of won as Koreans write it: `18500` → `18,500`.
    #[askama::filter_fn]
    pub fn won<T: std::fmt::Display>(amount: T, _: &dyn askama::Values) -> askama::Result<String> {
        Ok(super::thousands(&amount.to_string()))
    }
}

/// `digits` with a comma before every third digit from the right; a sign
/// stays in front, anything that is not an integer as it is.
fn thousands(digits: &str) -> String {
    let (sign, number) = match digits.strip_prefix('-') {
        Some(number) => ("-", number),
        None => ("", digits),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return digits.to_owned();
    }
    let mut grouped = String::with_capacity(number.len() + number.len() / 3 + 1);
    for (i, digit) in number.chars().enumerate() {
        if i > 0 && (number.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("{sign}{grouped}")
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(shops_page))
        .route("/shops/{shop_id}", get(shop_page))
        .route("/shops/{shop_id}/order", post(order_form))
        .route("/orders/{order_no}", get(order_page))
        .route("/orders/{order_no}/cancel", post(cancel_form))
        .route("/members/{member_id}/orders", get(history_page))
        .route("/owner/shops/{shop_id}", get(board_page))
        .route(
            "/owner/shops/{shop_id}/orders/{order_no}/{decision}",
            post(decide_form),
        )
        .route("/riders/{rider_id}", get(rider_page))
        .route(
            "/riders/{rider_id}/deliveries/{order_no}/{step}",
            post(ride_form),
        )
}

#[derive(Template)]
#[template(path = "shops.html")]
struct ShopsPage {
    error: Option<String>,
    categories: [&'static str; 7],
    shops: Vec<Shop>,
}

#[derive(Template)]
#[template(path = "shop.html")]
struct ShopPage {
    error: Option<String>,
    shop: ShopWithMenu,
    member_id: String,
    /// Sent back as the order's Idempotency-Key: submitting the form twice
    /// (a double click, a reload) places one order.
    form_token: String,
}

fn form_token() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[derive(Template)]
#[template(path = "order.html")]
struct OrderPage {
    error: Option<String>,
    order: OrderView,
    cancellable: bool,
}

#[derive(Template)]
#[template(path = "history.html")]
struct HistoryPage {
    error: Option<String>,
    member_id: i64,
    page: Page<OrderSummary>,
    has_next: bool,
}

#[derive(Template)]
#[template(path = "board.html")]
struct BoardPage {
    error: Option<String>,
    shop: Shop,
    orders: Vec<BoardEntry>,
}

#[derive(Template)]
#[template(path = "rider.html")]
struct RiderPage {
    error: Option<String>,
    board: RiderBoard,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    error: Option<String>,
    title: &'static str,
}

fn render(template: &impl Template, status: StatusCode) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "page did not render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<h1>Internal error</h1>".to_owned()),
            )
                .into_response()
        }
    }
}

/// A failure as a page of its own (unknown shop, order, rider).
fn error_page(fail: &Fail) -> Response {
    let page = ErrorPage {
        error: Some(fail.detail.clone()),
        title: fail.title,
    };
    render(&page, fail.status)
}

fn id(raw: &str, what: &'static str) -> Result<i64, Fail> {
    raw.parse().map_err(|_| {
        Fail::not_found(
            "not-found",
            "Not Found",
            format!("'{raw}' is not a {what} number."),
        )
    })
}

#[derive(Debug, Deserialize)]
struct ShopFilter {
    category: Option<String>,
    open: Option<String>,
}

async fn shops_page(State(state): State<AppState>, Query(filter): Query<ShopFilter>) -> Response {
    let open = filter.open.as_deref() == Some("true");
    let category = filter.category.as_deref().filter(|c| !c.is_empty());
    match shops::list(&state.db, category, open).await {
        Ok(shops) => render(
            &ShopsPage {
                error: None,
                categories: CATEGORIES,
                shops,
            },
            StatusCode::OK,
        ),
        Err(fail) => render(
            &ShopsPage {
                error: Some(fail.detail),
                categories: CATEGORIES,
                shops: Vec::new(),
            },
            fail.status,
        ),
    }
}

async fn shop_page(State(state): State<AppState>, Path(shop_id): Path<String>) -> Response {
    let shop = match id(&shop_id, "shop") {
        Ok(shop_id) => shops::with_menu(&state.db, shop_id).await,
        Err(fail) => Err(fail),
    };
    match shop {
        Ok(shop) => render(
            &ShopPage {
                error: None,
                shop,
                member_id: String::new(),
                form_token: form_token(),
            },
            StatusCode::OK,
        ),
        Err(fail) => error_page(&fail),
    }
}

/// The order form: `member_id`, `address`, `request` and one `qty_<menu_id>`
/// per menu item; items left at 0 are not ordered.
async fn order_form(
    State(state): State<AppState>,
    Path(shop_id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let shop_id = match id(&shop_id, "shop") {
        Ok(shop_id) => shop_id,
        Err(fail) => return error_page(&fail),
    };
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let member_field = field("member_id").unwrap_or_default();
    let request = build_order(
        shop_id,
        &fields,
        &member_field,
        field("address"),
        field("request"),
    );
    let outcome = match request {
        Ok(request) => orders::place(
            &state.db,
            &state.gateway,
            &request,
            field("form_token").as_deref(),
        )
        .await
        .map(|answer| (answer.status, answer.body)),
        Err(fail) => Err(fail),
    };
    let message = match outcome {
        Ok((StatusCode::CREATED, body)) => {
            let no = body["order_no"].as_str().unwrap_or_default();
            return Redirect::to(&format!("/orders/{no}")).into_response();
        }
        Ok((status, body)) => (
            status,
            body["detail"]
                .as_str()
                .unwrap_or("The order failed.")
                .to_owned(),
        ),
        Err(fail) => (fail.status, fail.detail),
    };
    match shops::with_menu(&state.db, shop_id).await {
        Ok(shop) => render(
            &ShopPage {
                error: Some(message.1),
                shop,
                member_id: member_field,
                form_token: form_token(),
            },
            message.0,
        ),
        Err(fail) => error_page(&fail),
    }
}

fn build_order(
    shop_id: i64,
    fields: &[(String, String)],
    member: &str,
    address: Option<String>,
    request: Option<String>,
) -> Result<PlaceOrder, Fail> {
    let invalid = |detail: &str| Fail::invalid("invalid-order", "Invalid order", detail);
    let member_id = member
        .parse()
        .map_err(|_| invalid("Enter your member number."))?;
    let mut items = Vec::new();
    for (name, value) in fields {
        let Some(menu) = name.strip_prefix("qty_") else {
            continue;
        };
        let value = value.trim();
        if value.is_empty() || value == "0" {
            continue;
        }
        let (Ok(menu_id), Ok(quantity)) = (menu.parse(), value.parse()) else {
            return Err(invalid("Quantities are whole numbers from 0 to 99."));
        };
        items.push(OrderLine { menu_id, quantity });
    }
    Ok(PlaceOrder {
        member_id,
        shop_id,
        items,
        address,
        request,
    })
}

async fn order_view_page(state: &AppState, order_no: &str, error: Option<Fail>) -> Response {
    match orders::find(&state.db, order_no).await {
        Ok(order) => {
            let cancellable = matches!(order.status_code.as_str(), "10" | "20");
            let status = error.as_ref().map_or(StatusCode::OK, |f| f.status);
            render(
                &OrderPage {
                    error: error.map(|f| f.detail),
                    order,
                    cancellable,
                },
                status,
            )
        }
        Err(fail) => error_page(&fail),
    }
}

async fn order_page(State(state): State<AppState>, Path(order_no): Path<String>) -> Response {
    order_view_page(&state, &order_no, None).await
}

#[derive(Debug, Deserialize)]
struct CancelForm {
    member_id: String,
}

async fn cancel_form(
    State(state): State<AppState>,
    Path(order_no): Path<String>,
    Form(form): Form<CancelForm>,
) -> Response {
    let result = match id(&form.member_id, "member") {
        Ok(member_id) => orders::cancel(&state.db, &state.gateway, &order_no, member_id).await,
        Err(fail) => Err(fail),
    };
    match result {
        Ok(_) => Redirect::to(&format!("/orders/{order_no}")).into_response(),
        Err(fail) => order_view_page(&state, &order_no, Some(fail)).await,
    }
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    page: Option<u32>,
}

async fn history_page(
    State(state): State<AppState>,
    Path(member_id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let member_id = match id(&member_id, "member") {
        Ok(member_id) => member_id,
        Err(fail) => return error_page(&fail),
    };
    match orders::history(&state.db, member_id, query.page.unwrap_or(1).max(1), 20).await {
        Ok(page) => {
            let has_next = i64::from(page.page) * i64::from(page.size) < page.total;
            render(
                &HistoryPage {
                    error: None,
                    member_id,
                    page,
                    has_next,
                },
                StatusCode::OK,
            )
        }
        Err(fail) => error_page(&fail),
    }
}

async fn board_view(state: &AppState, shop_id: i64, error: Option<Fail>) -> Response {
    let loaded = match shops::find(&state.db, shop_id).await {
        Ok(shop) => fulfilment::board(&state.db, shop_id, None)
            .await
            .map(|orders| (shop, orders)),
        Err(fail) => Err(fail),
    };
    match loaded {
        Ok((shop, orders)) => {
            let status = error.as_ref().map_or(StatusCode::OK, |f| f.status);
            render(
                &BoardPage {
                    error: error.map(|f| f.detail),
                    shop,
                    orders,
                },
                status,
            )
        }
        Err(fail) => error_page(&fail),
    }
}

async fn board_page(State(state): State<AppState>, Path(shop_id): Path<String>) -> Response {
    match id(&shop_id, "shop") {
        Ok(shop_id) => board_view(&state, shop_id, None).await,
        Err(fail) => error_page(&fail),
    }
}

async fn decide_form(
    State(state): State<AppState>,
    Path((shop_id, order_no, decision)): Path<(String, String, String)>,
) -> Response {
    let shop_id = match id(&shop_id, "shop") {
        Ok(shop_id) => shop_id,
        Err(fail) => return error_page(&fail),
    };
    let decision = match decision.as_str() {
        "accept" => Decision::Accept,
        "reject" => Decision::Reject,
        _ => {
            return error_page(&Fail::not_found(
                "not-found",
                "Not Found",
                "No such action.",
            ));
        }
    };
    match fulfilment::decide(&state.db, &state.gateway, shop_id, &order_no, decision).await {
        Ok(_) => Redirect::to(&format!("/owner/shops/{shop_id}")).into_response(),
        Err(fail) => board_view(&state, shop_id, Some(fail)).await,
    }
}

async fn rider_view(state: &AppState, rider_id: i64, error: Option<Fail>) -> Response {
    match fulfilment::rider_board(&state.db, rider_id).await {
        Ok(board) => {
            let status = error.as_ref().map_or(StatusCode::OK, |f| f.status);
            render(
                &RiderPage {
                    error: error.map(|f| f.detail),
                    board,
                },
                status,
            )
        }
        Err(fail) => error_page(&fail),
    }
}

async fn rider_page(State(state): State<AppState>, Path(rider_id): Path<String>) -> Response {
    match id(&rider_id, "rider") {
        Ok(rider_id) => rider_view(&state, rider_id, None).await,
        Err(fail) => error_page(&fail),
    }
}

async fn ride_form(
    State(state): State<AppState>,
    Path((rider_id, order_no, step)): Path<(String, String, String)>,
) -> Response {
    let rider_id = match id(&rider_id, "rider") {
        Ok(rider_id) => rider_id,
        Err(fail) => return error_page(&fail),
    };
    let step = match step.as_str() {
        "pickup" => RiderStep::PickUp,
        "deliver" => RiderStep::Deliver,
        _ => return error_page(&Fail::not_found("not-found", "Not Found", "No such step.")),
    };
    match fulfilment::ride(&state.db, rider_id, &order_no, step).await {
        Ok(_) => Redirect::to(&format!("/riders/{rider_id}")).into_response(),
        Err(fail) => rider_view(&state, rider_id, Some(fail)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn won_is_grouped_by_thousands() {
        for (raw, shown) in [
            ("0", "0"),
            ("500", "500"),
            ("1000", "1,000"),
            ("18500", "18,500"),
            ("123456", "123,456"),
            ("1234567", "1,234,567"),
            ("-2500", "-2,500"),
            ("12a", "12a"),
            ("", ""),
        ] {
            assert_eq!(thousands(raw), shown, "{raw:?}");
        }
    }
}
