//! ordering's order store against a real PostgreSQL (a fresh database per
//! test): an order and the facts its change caused are kept together, a
//! change made on a stale read is refused with nothing written, and what
//! comes back is the order that went in.

use ordering::adapters::outbound::postgres::{PgOrders, prepare_database};
use ordering::application::ports::{Orders, Saga, Step, StoreError};
use ordering::domain::order::Pricing;
use ordering::domain::{
    CancelReason, MenuItem, MinuteOfDay, NewOrder, OpeningHours, Order, OrderEvent, OrderNo,
    OrderStatus, Refund, RequestedItem, Shop, Won,
};
use serde_json::{Value, json};
use sqlx::PgPool;
use time::OffsetDateTime;
use time::macros::datetime;

const PLACED_AT: OffsetDateTime = datetime!(2026-11-30 03:00 UTC);
const PAID_AT: OffsetDateTime = datetime!(2026-11-30 03:00:02 UTC);

fn won(amount: i64) -> Won {
    Won::new(amount).expect("an amount")
}

fn placed(order_no: &str) -> (Order, OrderEvent) {
    let shop = Shop {
        name: "바삭치킨".to_owned(),
        shop_id: 4,
        hours: OpeningHours {
            open: MinuteOfDay::parse_hhmm("1100").expect("a time"),
            close: MinuteOfDay::parse_hhmm("2300").expect("a time"),
        },
        minimum: won(15_000),
    };
    let menu = [
        MenuItem {
            menu_id: 31,
            shop_id: 4,
            name: "후라이드".into(),
            price: won(18_500),
            on_sale: true,
        },
        MenuItem {
            menu_id: 33,
            shop_id: 4,
            name: "콜라 1.25L".into(),
            price: won(2_500),
            on_sale: true,
        },
    ];
    let request = NewOrder {
        member_id: 3,
        shop_id: 4,
        items: vec![
            RequestedItem {
                menu_id: 31,
                quantity: 2,
            },
            RequestedItem {
                menu_id: 33,
                quantity: 1,
            },
        ],
        address: None,
        request: Some("문 앞에 놓아 주세요".into()),
    };
    Order::price(
        &request,
        Pricing {
            member_address: Some("서울시 마포구 1"),
            shop: Some(&shop),
            menu: &menu,
            minute: MinuteOfDay::parse_hhmm("1200").expect("a time"),
        },
    )
    .expect("priced")
    .place(
        OrderNo::parse(order_no).expect("an order number"),
        PLACED_AT,
    )
}

async fn store(pool: &PgPool) -> PgOrders {
    prepare_database(pool).await.expect("the schema");
    PgOrders::new(pool.clone())
}

/// (event name, aggregate sequence, payload) of every outbox row, in order.
async fn outbox(pool: &PgPool) -> Vec<(String, i64, Value)> {
    sqlx::query_as("SELECT event_name, aggregate_seq, payload FROM outbox ORDER BY id")
        .fetch_all(pool)
        .await
        .expect("the outbox")
}

#[sqlx::test(migrations = false)]
async fn a_placed_order_is_kept_with_its_placed_fact(pool: PgPool) {
    let orders = store(&pool).await;
    let (order, event) = placed("20261130-000123");
    orders
        .add(&order, &[event], &Saga::DONE)
        .await
        .expect("added");

    let read = orders
        .get(order.order_no())
        .await
        .expect("read")
        .expect("found");
    assert_eq!((read.value, read.version), (order, 1));
    assert_eq!(
        outbox(&pool).await,
        [(
            "ordering.order.placed.v1".to_owned(),
            1,
            json!({
                "order_no": "20261130-000123",
                "member_id": 3,
                "shop_id": 4,
                "lines": [
                    {"menu_id": 31, "name": "후라이드", "unit_price": 18500, "quantity": 2},
                    {"menu_id": 33, "name": "콜라 1.25L", "unit_price": 2500, "quantity": 1}
                ],
                "total_amount": 39500,
                "delivery_address": "서울시 마포구 1",
                "request": "문 앞에 놓아 주세요",
                "placed_at": "2026-11-30T03:00:00Z"
            })
        )]
    );
    let unknown = OrderNo::parse("20261130-000999").expect("an order number");
    assert_eq!(orders.get(&unknown).await, Ok(None));
}

#[sqlx::test(migrations = false)]
async fn an_order_number_is_stored_once(pool: PgPool) {
    let orders = store(&pool).await;
    let (order, event) = placed("20261130-000123");
    orders
        .add(&order, std::slice::from_ref(&event), &Saga::DONE)
        .await
        .expect("added");
    // The same order again, as after a commit whose answer was lost.
    orders
        .add(&order, std::slice::from_ref(&event), &Saga::DONE)
        .await
        .expect("the same order again is no error");
    // Another order under the same number is.
    let (mut other, _) = placed("20261130-000123");
    other.paid("pay_9", PAID_AT).expect("paid");
    assert_eq!(
        orders.add(&other, &[event], &Saga::DONE).await,
        Err(StoreError::Exists(order.order_no().clone()))
    );
    assert_eq!(outbox(&pool).await.len(), 1, "only the first add wrote");
}

#[sqlx::test(migrations = false)]
async fn each_change_moves_the_version_and_writes_its_facts_in_order(pool: PgPool) {
    let orders = store(&pool).await;
    let (mut order, event) = placed("20261130-000123");
    orders
        .add(&order, &[event], &Saga::DONE)
        .await
        .expect("added");

    let paid = order.paid("pay_1", PAID_AT).expect("paid");
    orders
        .save(&order, 1, &paid, &Saga::DONE)
        .await
        .expect("saved");
    let cancelled = order.cancel_by_member(PAID_AT).expect("cancelled");
    orders
        .save(&order, 2, &cancelled, &Saga::DONE)
        .await
        .expect("saved");
    let read = orders
        .get(order.order_no())
        .await
        .expect("read")
        .expect("found");
    assert_eq!(read.version, 3);
    assert_eq!(
        (
            read.value.status(),
            read.value.cancel_reason(),
            read.value.refund()
        ),
        (
            OrderStatus::Cancelled,
            Some(CancelReason::Member),
            Refund::Owed
        )
    );
    assert_eq!(read.value, order);
    let rows = outbox(&pool).await;
    assert_eq!(
        rows.iter()
            .map(|(name, seq, _)| (name.as_str(), *seq))
            .collect::<Vec<_>>(),
        [
            ("ordering.order.placed.v1", 1),
            ("ordering.order.paid.v1", 2),
            ("ordering.order.cancelled.v1", 3)
        ]
    );
    assert_eq!(
        rows[1].2,
        json!({"order_no": "20261130-000123", "amount": 39500, "payment_id": "pay_1", "paid_at": "2026-11-30T03:00:02Z"})
    );
    assert_eq!(
        rows[2].2,
        json!({"order_no": "20261130-000123", "reason": "member", "refunded": true, "cancelled_at": "2026-11-30T03:00:02Z"})
    );
}

#[sqlx::test(migrations = false)]
async fn a_change_made_on_a_stale_read_is_refused_and_writes_nothing(pool: PgPool) {
    let orders = store(&pool).await;
    let (order, event) = placed("20261130-000123");
    orders
        .add(&order, &[event], &Saga::DONE)
        .await
        .expect("added");

    // Two writers read version 1: the gateway's answer and the member's cancel.
    let mut payer = orders
        .get(order.order_no())
        .await
        .expect("read")
        .expect("found");
    let mut canceller = orders
        .get(order.order_no())
        .await
        .expect("read")
        .expect("found");
    let cancelled = canceller
        .value
        .cancel_by_member(PAID_AT)
        .expect("cancelled");
    orders
        .save(&canceller.value, canceller.version, &cancelled, &Saga::DONE)
        .await
        .expect("the first change wins");
    let paid = payer.value.paid("pay_1", PAID_AT).expect("paid");
    assert_eq!(
        orders
            .save(&payer.value, payer.version, &paid, &Saga::DONE)
            .await,
        Err(StoreError::Stale(order.order_no().clone()))
    );
    let read = orders
        .get(order.order_no())
        .await
        .expect("read")
        .expect("found");
    assert_eq!(
        (read.value.status(), read.value.payment_id(), read.version),
        (OrderStatus::Cancelled, None, 2)
    );
    assert_eq!(
        outbox(&pool)
            .await
            .iter()
            .map(|(name, _, _)| name.as_str())
            .collect::<Vec<_>>(),
        ["ordering.order.placed.v1", "ordering.order.cancelled.v1"],
        "the losing change's fact was never written"
    );
}

#[sqlx::test(migrations = false)]
async fn a_row_changed_behind_the_stores_back_is_reported_not_served(pool: PgPool) {
    let orders = store(&pool).await;
    let (order, event) = placed("20261130-000123");
    orders
        .add(&order, &[event], &Saga::DONE)
        .await
        .expect("added");
    sqlx::query("UPDATE orders SET total_won = 1 WHERE order_no = '20261130-000123'")
        .execute(&pool)
        .await
        .expect("tampered");
    let error = orders
        .get(order.order_no())
        .await
        .expect_err("a total its lines do not make");
    assert_eq!(
        error.to_string(),
        "the stored order 20261130-000123 is not one the rules could make: its lines do not add up to its total"
    );
    let schema_refuses =
        sqlx::query("UPDATE orders SET status = 'lost' WHERE order_no = '20261130-000123'")
            .execute(&pool)
            .await;
    assert!(
        schema_refuses.is_err(),
        "a status the schema does not know is refused"
    );
}

#[sqlx::test(migrations = false)]
async fn the_sagas_step_is_kept_with_its_order_and_the_sweeper_finds_what_is_due(pool: PgPool) {
    let orders = store(&pool).await;
    let (mut early, event) = placed("20261130-000001");
    let authorising = Saga::at(Step::Authorising, PAID_AT);
    orders
        .add(&early, std::slice::from_ref(&event), &authorising)
        .await
        .expect("added");
    let (late, event) = placed("20261130-000002");
    orders
        .add(
            &late,
            &[event],
            &Saga::at(Step::Authorising, datetime!(2026-11-30 04:00 UTC)),
        )
        .await
        .expect("added");
    let read = orders
        .get(early.order_no())
        .await
        .expect("read")
        .expect("found");
    assert_eq!(read.saga, authorising);

    let now = datetime!(2026-11-30 03:30 UTC);
    let lease = datetime!(2026-11-30 03:31 UTC);
    assert_eq!(
        orders.due(now, 10, lease).await,
        Ok(vec![early.order_no().clone()]),
        "only what is due, oldest first"
    );
    assert_eq!(
        orders.due(now, 10, lease).await,
        Ok(vec![]),
        "a claimed order is not handed out again while its lease runs"
    );
    let read = orders
        .get(early.order_no())
        .await
        .expect("read")
        .expect("found");
    assert_eq!(
        (read.saga.step, read.saga.due, read.version),
        (Step::Authorising, Some(lease), 1),
        "a claim moves the due time to the lease's end, and is no change of the order"
    );
    let paid = early.paid("pay_1", PAID_AT).expect("paid");
    let waiting = Saga::at(Step::AwaitingDecision, datetime!(2026-11-30 05:00 UTC));
    orders
        .save(&early, 1, &paid, &waiting)
        .await
        .expect("saved: the claim did not move the version");
    assert_eq!(
        orders.due(datetime!(2026-11-30 03:32 UTC), 10, lease).await,
        Ok(vec![])
    );
    let read = orders
        .get(early.order_no())
        .await
        .expect("read")
        .expect("found");
    assert_eq!((read.saga, read.version), (waiting, 2));
    let later_lease = datetime!(2026-11-30 06:01 UTC);
    assert_eq!(
        orders
            .due(datetime!(2026-11-30 06:00 UTC), 1, later_lease)
            .await,
        Ok(vec![late.order_no().clone()]),
        "at most the limit"
    );
    assert_eq!(
        orders
            .due(datetime!(2026-11-30 06:00 UTC), 10, later_lease)
            .await,
        Ok(vec![early.order_no().clone()]),
        "past its deadline, an order waiting for the shop is due too; the one claimed a moment ago is not"
    );
    assert_eq!(
        orders
            .due(
                datetime!(2026-11-30 06:02 UTC),
                10,
                datetime!(2026-11-30 06:03 UTC)
            )
            .await,
        Ok(vec![early.order_no().clone(), late.order_no().clone()]),
        "a lease that ran out (its sweeper died) lets the order be claimed again \
         (both leases ended at once: in number order)"
    );
    // A finished saga has no due time; the schema refuses one half done.
    let refused =
        sqlx::query("UPDATE orders SET saga_step = 'done' WHERE order_no = '20261130-000002'")
            .execute(&pool)
            .await;
    assert!(refused.is_err());
}
