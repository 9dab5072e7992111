//! An order ordering took, followed through what happens to it on Baedal:
//! on real parts (Baedal, the ACL with its change feed and sync-back,
//! RabbitMQ, the payment sandbox, ordering as `make up` runs it). The
//! order goes to Baedal's board by sync-back; the owner decides there and
//! riders work there; the feed brings each step back to ordering.

#[path = "../../../acl/tests/support/mod.rs"]
mod legacy;
mod running;
mod support;

use legacy::{Rig, eventually};
use ordering::adapters::outbound::postgres::PgOrders;
use ordering::application::ports::{Orders, Step};
use ordering::domain::{OrderNo, OrderStatus, Refund};
use running::RunningOrdering;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

struct World {
    rig: Rig,
    acl: legacy::app::RunningAcl,
    ordering: RunningOrdering,
    orders: PgOrders,
}

impl World {
    async fn start(options: &PgConnectOptions) -> Self {
        let rig = Rig::start(options).await;
        let acl = rig.start_acl(rig.acl_settings()).await;
        let ordering = RunningOrdering::start(&rig, options, &acl.url).await;
        let orders = PgOrders::new(ordering.pool().clone());
        Self {
            rig,
            acl,
            ordering,
            orders,
        }
    }

    async fn finish(self) {
        self.ordering.stop(&self.rig).await;
        self.acl.stop().await;
        self.rig.finish().await;
    }

    /// Places member 1's order at shop 1 with ordering; waits until the
    /// owner sees it on Baedal's board.
    async fn place(&self) -> (OrderNo, i64) {
        let (order_no, total) = self.ordering.place_on_the_board(&self.rig).await;
        (OrderNo::parse(&order_no).expect("a number"), total)
    }

    async fn baedal(&self, path: &str) -> Value {
        self.rig.get(path).await.json().await.expect("JSON")
    }

    async fn on_baedal(&self, path: &str) {
        let response = self.rig.post(path, &json!({})).await;
        assert_eq!(response.status(), 200, "{path}");
    }

    /// Waits until ordering's order is `status` with `refund`, and
    /// returns its saga's step.
    async fn reaches(&self, order_no: &OrderNo, status: OrderStatus, refund: Refund) -> Step {
        let what = format!("order {order_no} {status} with refund {refund:?} in ordering");
        eventually(&what, || async {
            let stored = self.orders.get(order_no).await.expect("read");
            stored.is_some_and(|s| s.value.status() == status && s.value.refund() == refund)
        })
        .await;
        let stored = self
            .orders
            .get(order_no)
            .await
            .expect("read")
            .expect("found");
        stored.saga.step
    }

    async fn ledger(&self, order_no: &OrderNo) -> Vec<(String, i64)> {
        running::ledger(&self.rig, order_no.as_str()).await
    }

    /// The facts ordering published about the order, in order.
    async fn published(&self, order_no: &OrderNo) -> Vec<String> {
        running::published(self.ordering.pool(), order_no.as_str()).await
    }
}

#[sqlx::test(migrations = false)]
async fn the_board_and_the_riders_take_an_order_ordering_placed_to_the_door(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let world = World::start(&options).await;
    let (order_no, total) = world.place().await;

    world
        .on_baedal(&format!("/api/shops/1/orders/{order_no}/accept"))
        .await;
    let step = world
        .reaches(&order_no, OrderStatus::Accepted, Refund::NotOwed)
        .await;
    assert_eq!(step, Step::Done, "the wait for the shop is over");

    let view = world.baedal(&format!("/api/orders/{order_no}")).await;
    let rider = view["delivery"]["rider_id"].as_i64().expect("a rider");
    world
        .on_baedal(&format!("/api/riders/{rider}/deliveries/{order_no}/pickup"))
        .await;
    world
        .reaches(&order_no, OrderStatus::PickedUp, Refund::NotOwed)
        .await;
    world
        .on_baedal(&format!(
            "/api/riders/{rider}/deliveries/{order_no}/deliver"
        ))
        .await;
    world
        .reaches(&order_no, OrderStatus::Delivered, Refund::NotOwed)
        .await;

    assert_eq!(
        world.published(&order_no).await,
        [
            "ordering.order.placed.v1",
            "ordering.order.paid.v1",
            "ordering.order.accepted.v1",
            "ordering.order.picked_up.v1",
            "ordering.order.delivered.v1",
        ]
    );
    assert_eq!(
        world.ledger(&order_no).await,
        [("approved".to_owned(), total)],
        "charged once, nothing given back"
    );
    world.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_reject_on_the_board_is_refunded_once_by_baedal_and_ordering_adopts_it(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let world = World::start(&options).await;
    let (order_no, total) = world.place().await;

    world
        .on_baedal(&format!("/api/shops/1/orders/{order_no}/reject"))
        .await;
    // Rejected at once, and refunded when Baedal's refund is announced.
    let step = world
        .reaches(&order_no, OrderStatus::Rejected, Refund::Refunded)
        .await;
    assert_eq!(step, Step::Done, "ordering has nothing to give back");
    assert_eq!(
        world.ledger(&order_no).await,
        [("refunded".to_owned(), total)],
        "one charge, given back once"
    );
    assert_eq!(
        world.published(&order_no).await,
        [
            "ordering.order.placed.v1",
            "ordering.order.paid.v1",
            "ordering.order.rejected.v1",
            "ordering.order.refunded.v1",
        ]
    );
    world.finish().await;
}

#[sqlx::test(migrations = false)]
async fn baedals_own_orders_pass_ordering_by(_: PgPoolOptions, options: PgConnectOptions) {
    let rig = Rig::start(&options).await;
    let acl = rig.start_acl(rig.acl_settings()).await;
    // One consumer: it takes the facts in the order the feed published them.
    let ordering = RunningOrdering::start_with(
        &rig,
        &options,
        &acl.url,
        running::Tuning {
            consumers: 1,
            ..running::Tuning::default()
        },
    )
    .await;
    let orders = PgOrders::new(ordering.pool().clone());
    let world = World {
        rig,
        acl,
        ordering,
        orders,
    };
    // An order placed on Baedal, accepted there: its facts reach ordering's
    // queue, which takes them and keeps nothing.
    let legacy_order = world.rig.place_order().await;
    world
        .on_baedal(&format!("/api/shops/1/orders/{legacy_order}/accept"))
        .await;
    // An order of ordering's after it: once its acceptance is followed,
    // the consumer has taken the legacy order's facts before it.
    let (order_no, _) = world.place().await;
    world
        .on_baedal(&format!("/api/shops/1/orders/{order_no}/accept"))
        .await;
    world
        .reaches(&order_no, OrderStatus::Accepted, Refund::NotOwed)
        .await;
    let known: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(world.ordering.pool())
        .await
        .expect("a count");
    assert_eq!(known, 1, "only ordering's own order");
    assert_eq!(
        world.ordering.retried_and_dead().await,
        (0, 0),
        "taken, neither retried nor dead-lettered"
    );
    world.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_members_cancel_on_baedal_is_refunded_once_by_baedal_and_ordering_adopts_it(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let world = World::start(&options).await;
    let (order_no, total) = world.place().await;
    // After a rollback of the route, the member cancels on Baedal, which
    // refunds with its own code.
    let response = world
        .rig
        .post(
            &format!("/api/orders/{order_no}/cancel"),
            &json!({"member_id": 1}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let step = world
        .reaches(&order_no, OrderStatus::Cancelled, Refund::Refunded)
        .await;
    assert_eq!(step, Step::Done, "ordering has nothing to give back");
    let stored = world
        .orders
        .get(&order_no)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(
        stored.value.cancel_reason(),
        Some(ordering::domain::CancelReason::Member)
    );
    assert_eq!(
        world.ledger(&order_no).await,
        [("refunded".to_owned(), total)],
        "one charge, given back once"
    );
    world.finish().await;
}
