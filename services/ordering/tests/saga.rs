//! Placing an order and the payment steps of the place-order saga, on real
//! parts: ordering's store in a database of its own, the payment sandbox
//! (whose ledger shows every charge and refund), and the ACL in front of
//! Baedal for shops, menus, members and order numbers (the ACL tests' rig).
//! Crashes are made by stopping between two steps: the order is stored
//! with its step and the process goes no further, as after `kill -9`.

#[path = "../../../acl/tests/support/mod.rs"]
mod legacy;
mod support;

use std::time::Duration;

use chassis::http_client::{ClientMetrics, DependencySettings};
use legacy::Rig;
use ordering::adapters::outbound::acl::AclUpstream;
use ordering::adapters::outbound::payment_gateway::PaymentGateway;
use ordering::adapters::outbound::postgres::{PgOrders, prepare_database};
use ordering::application::place::{Deadlines, Placement, Placing, Swept, to_micros};
use ordering::application::ports::{
    Authorisation, Orders, Payments, Saga, Step, Upstream, payment_keys,
};
use ordering::domain::order::Pricing;
use ordering::domain::{
    CancelReason, MinuteOfDay, NewOrder, Order, OrderError, OrderStatus, Refund, RequestedItem,
};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::{API_KEY, ledger, sandbox, set_behaviour};
use time::OffsetDateTime;

/// Everything a saga test stands on.
struct World {
    rig: Rig,
    acl: legacy::app::RunningAcl,
    sandbox: String,
    pool: PgPool,
    database: String,
    placing: Placing<PgOrders, PaymentGateway, AclUpstream>,
    orders: PgOrders,
}

impl World {
    async fn start(options: &PgConnectOptions) -> Self {
        let rig = Rig::start(options).await;
        let acl = rig.start_acl(rig.acl_settings()).await;
        let sandbox = sandbox(pg_sandbox::Behaviour::default()).await;
        // ordering's own database, beside the test's legacy one.
        let database = format!("ordering_t_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"CREATE DATABASE "{database}""#
        )))
        .execute(&rig.legacy_admin)
        .await
        .expect("ordering's test database");
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .connect_with(options.clone().database(&database))
            .await
            .expect("ordering's database");
        prepare_database(&pool).await.expect("the schema");
        let orders = PgOrders::new(pool.clone());
        let payments = PaymentGateway::new(
            &sandbox,
            API_KEY.to_owned().into(),
            DependencySettings {
                timeout_ms: 300,
                retries: 0,
                ..DependencySettings::default()
            },
            ClientMetrics::default(),
        )
        .expect("a gateway client");
        let upstream = AclUpstream::new(
            &acl.url,
            DependencySettings::default(),
            ClientMetrics::default(),
        )
        .expect("an ACL client");
        let placing = Placing::new(
            orders.clone(),
            payments,
            upstream,
            Deadlines {
                gateway: Duration::from_secs(1),
                decision: Duration::from_secs(600),
                retry: Duration::from_millis(100),
            },
        );
        Self {
            rig,
            acl,
            sandbox,
            pool,
            database,
            placing,
            orders,
        }
    }

    async fn finish(self) {
        self.pool.close().await;
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#,
            self.database
        )))
        .execute(&self.rig.legacy_admin)
        .await;
        self.acl.stop().await;
        self.rig.finish().await;
    }

    async fn behave(&self, behaviour: Value) {
        set_behaviour(&self.sandbox, behaviour).await;
    }

    /// (status, amount) of each payment the sandbox holds for the order.
    async fn ledger(&self, order: &Order) -> Vec<(String, i64)> {
        ledger(&self.sandbox, order.order_no()).await
    }

    async fn outbox(&self) -> Vec<String> {
        sqlx::query_scalar("SELECT event_name FROM outbox ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .expect("the outbox")
    }

    /// Stores an order the way `place` does before it asks the gateway,
    /// and goes no further: a crash right after the order was stored.
    async fn stored_then_crashed(&self, now: OffsetDateTime) -> Order {
        let upstream = AclUpstream::new(
            &self.acl.url,
            DependencySettings::default(),
            ClientMetrics::default(),
        )
        .expect("an ACL client");
        let shop = upstream.shop(1).await.expect("an answer");
        let menu = upstream.menu(1).await.expect("an answer");
        let priced = Order::price(
            &chicken(),
            Pricing {
                member_address: Some("서울시 마포구 1"),
                shop: shop.as_ref(),
                menu: &menu,
                minute: MinuteOfDay::in_korea(now),
            },
        )
        .expect("priced");
        let (order, placed) = priced.place(upstream.next_order_no().await.expect("a number"), now);
        let due = now + time::Duration::seconds(1);
        self.orders
            .add(&order, &[placed], &Saga::at(Step::Authorising, due))
            .await
            .expect("stored");
        order
    }
}

/// Two of shop 1's first item and one of its second: above its minimum.
fn chicken() -> NewOrder {
    NewOrder {
        member_id: 1,
        shop_id: 1,
        items: vec![
            RequestedItem {
                menu_id: 1,
                quantity: 2,
            },
            RequestedItem {
                menu_id: 2,
                quantity: 1,
            },
        ],
        address: None,
        request: None,
    }
}

fn later(now: OffsetDateTime, seconds: i64) -> OffsetDateTime {
    now + time::Duration::seconds(seconds)
}

#[sqlx::test(migrations = false)]
async fn an_order_is_charged_once_and_waits_for_the_shop(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let world = World::start(&options).await;
    let now = to_micros(OffsetDateTime::now_utc());
    let Placement::Paid { order, shop_name } =
        world.placing.place(&chicken(), now).await.expect("placed")
    else {
        panic!("paid");
    };
    assert_eq!(
        shop_name, "한옥집 김치찌개",
        "the shop's name, for the answer"
    );
    assert_eq!(
        world.ledger(&order).await,
        [("approved".to_owned(), order.total().amount())]
    );
    let stored = world
        .orders
        .get(order.order_no())
        .await
        .expect("read")
        .expect("found");
    assert_eq!(stored.value, order);
    assert_eq!(stored.value.status(), OrderStatus::Paid);
    assert_eq!(stored.saga.step, Step::AwaitingDecision);
    assert_eq!(stored.saga.due, Some(later(now, 600)));
    assert_eq!(
        world.outbox().await,
        ["ordering.order.placed.v1", "ordering.order.paid.v1"]
    );
    // The sweeper leaves an order the shop is deciding.
    assert_eq!(world.placing.sweep(later(now, 5), 10).await, Ok(vec![]));
    world.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_declined_card_cancels_the_order_and_charges_nothing(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let world = World::start(&options).await;
    world.behave(json!({"decline_percent": 100})).await;
    let now = to_micros(OffsetDateTime::now_utc());
    let Placement::Declined { order, reason } =
        world.placing.place(&chicken(), now).await.expect("placed")
    else {
        panic!("declined");
    };
    assert_eq!(reason, "insufficient_funds");
    assert_eq!(
        (order.status(), order.cancel_reason(), order.refund()),
        (
            OrderStatus::Cancelled,
            Some(CancelReason::PaymentDeclined),
            Refund::NotOwed
        )
    );
    assert_eq!(
        world.ledger(&order).await,
        [("declined".to_owned(), order.total().amount())]
    );
    let stored = world
        .orders
        .get(order.order_no())
        .await
        .expect("read")
        .expect("found");
    assert_eq!(stored.saga, Saga::DONE);
    world.finish().await;
}

#[sqlx::test(migrations = false)]
async fn no_answer_cancels_the_order_and_the_sweeper_gives_back_what_was_taken(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let world = World::start(&options).await;
    // The sandbox records the charge, then answers after the client's
    // deadline.
    world.behave(json!({"latency_ms": 1500})).await;
    let now = to_micros(OffsetDateTime::now_utc());
    let Placement::Unpaid { order, timed_out } =
        world.placing.place(&chicken(), now).await.expect("placed")
    else {
        panic!("unpaid");
    };
    assert!(timed_out);
    assert_eq!(
        (order.status(), order.cancel_reason()),
        (OrderStatus::Cancelled, Some(CancelReason::PaymentFailed))
    );
    world.behave(json!({})).await;
    assert_eq!(
        world.ledger(&order).await,
        [("approved".to_owned(), order.total().amount())],
        "the money was taken although no answer came"
    );
    // Not due yet: the gateway may still be finishing.
    assert_eq!(world.placing.sweep(now, 10).await, Ok(vec![]));
    assert_eq!(
        world.placing.sweep(later(now, 2), 10).await,
        Ok(vec![(order.order_no().clone(), Swept::Moved(Step::Done))])
    );
    let stored = world
        .orders
        .get(order.order_no())
        .await
        .expect("read")
        .expect("found");
    assert_eq!(
        (
            stored.value.status(),
            stored.value.refund(),
            stored.value.payment_id().is_some(),
            stored.saga
        ),
        (OrderStatus::Cancelled, Refund::Refunded, true, Saga::DONE)
    );
    assert_eq!(
        world.ledger(&order).await,
        [("refunded".to_owned(), order.total().amount())],
        "given back, once"
    );
    assert_eq!(world.placing.sweep(later(now, 60), 10).await, Ok(vec![]));
    world.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_crash_before_the_gateway_was_asked_ends_the_order_unpaid(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let world = World::start(&options).await;
    let now = to_micros(OffsetDateTime::now_utc());
    let order = world.stored_then_crashed(now).await;
    assert_eq!(
        world.placing.sweep(later(now, 2), 10).await,
        Ok(vec![(order.order_no().clone(), Swept::Moved(Step::Done))])
    );
    let stored = world
        .orders
        .get(order.order_no())
        .await
        .expect("read")
        .expect("found");
    assert_eq!(
        (
            stored.value.status(),
            stored.value.cancel_reason(),
            stored.value.refund()
        ),
        (
            OrderStatus::Cancelled,
            Some(CancelReason::PaymentFailed),
            Refund::NotOwed
        )
    );
    assert_eq!(world.ledger(&order).await, [], "nothing was charged");
    world.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_crash_after_the_charge_before_it_was_recorded_gives_it_back_once(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let world = World::start(&options).await;
    let now = to_micros(OffsetDateTime::now_utc());
    let order = world.stored_then_crashed(now).await;
    // The call went out and charged; the process died before it recorded
    // the answer.
    let gateway = PaymentGateway::new(
        &world.sandbox,
        API_KEY.to_owned().into(),
        DependencySettings::default(),
        ClientMetrics::default(),
    )
    .expect("a gateway client");
    let charged = gateway
        .authorise(
            &payment_keys::authorisation(order.order_no()),
            order.order_no(),
            order.total(),
        )
        .await;
    assert!(matches!(charged, Authorisation::Approved { .. }));
    // Two sweepers at once (two instances after the restart).
    let (first, second) = tokio::join!(
        world.placing.sweep(later(now, 2), 10),
        world.placing.sweep(later(now, 2), 10)
    );
    let outcomes: Vec<Swept> = first
        .expect("swept")
        .into_iter()
        .chain(second.expect("swept"))
        .map(|(_, swept)| swept)
        .collect();
    assert_eq!(
        outcomes,
        [Swept::Moved(Step::Done)],
        "one sweeper claimed it, the other skipped it"
    );
    assert_eq!(
        world.ledger(&order).await,
        [("refunded".to_owned(), order.total().amount())],
        "charged once, given back once"
    );
    let stored = world
        .orders
        .get(order.order_no())
        .await
        .expect("read")
        .expect("found");
    assert_eq!(
        (stored.value.refund(), stored.saga),
        (Refund::Refunded, Saga::DONE)
    );
    world.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_refused_order_stores_nothing_and_takes_no_number(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let world = World::start(&options).await;
    let upstream = AclUpstream::new(
        &world.acl.url,
        DependencySettings::default(),
        ClientMetrics::default(),
    )
    .expect("an ACL client");
    let before = upstream.next_order_no().await.expect("a number");
    let mut elsewhere = chicken();
    elsewhere.items.push(RequestedItem {
        menu_id: 999_999,
        quantity: 1,
    });
    let now = to_micros(OffsetDateTime::now_utc());
    assert_eq!(
        world.placing.place(&elsewhere, now).await,
        Ok(Placement::Refused(OrderError::MenuItemNotInShop {
            shop_id: 1,
            menu_id: 999_999
        }))
    );
    let after = upstream.next_order_no().await.expect("a number");
    let sequence = |n: &ordering::domain::OrderNo| -> u64 {
        n.as_str()
            .split_once('-')
            .and_then(|(_, s)| s.parse().ok())
            .expect("a sequence")
    };
    assert_eq!(sequence(&after) - sequence(&before), 1, "no number taken");
    assert_eq!(world.outbox().await, Vec::<String>::new());
    world.finish().await;
}
