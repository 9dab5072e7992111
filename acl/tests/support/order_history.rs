//! A minimal store for reconciliation's tests: a table of order snapshots
//! in a database of its own, kept by a chassis consumer in aggregate order
//! from the ACL's `legacy.order.*` facts, and served over real HTTP in the
//! export shape reconciliation reads (`GET /v1/export/orders?after=&limit=`,
//! an `OrderPage`). The real read model, `services/order-history`, serves
//! the same export (`make reconcile` reads it on `make up`); it is not used
//! here because its tests depend on the ACL's, not the other way round.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use chassis::messaging::amqp;
use chassis::messaging::consumer::{
    self, Consumer, ConsumerMetrics, Handler, HandlerError, HandlerFuture, Message,
};
use chassis::messaging::topology::{self, QueueSpec};
use contracts::IntegrationEvent;
use contracts::legacy::{
    OrderPage, OrderPlaced, OrderResynced, OrderSnapshot, OrderStatusChanged, PaymentSnapshot,
};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use serde::Deserialize;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;

use super::Rig;

pub struct OrderHistory {
    /// Its own database, as the superuser.
    pub db: PgPool,
    db_name: String,
    admin: PgPool,
    /// Its export endpoint.
    pub url: String,
    queue: QueueSpec,
    amqp_url: String,
    stop: watch::Sender<bool>,
    consumer: tokio::task::JoinHandle<()>,
}

/// What it does with each fact of a legacy order, in the order's sequence.
struct ApplyLegacyOrders;

impl Handler for ApplyLegacyOrders {
    fn handle<'a>(&'a self, tx: &'a mut PgConnection, message: &'a Message) -> HandlerFuture<'a> {
        Box::pin(async move {
            match message.envelope.event_name.as_str() {
                OrderPlaced::NAME => {
                    let placed: OrderPlaced = message.decode()?;
                    // What a placed fact does not carry stays empty here:
                    // reconciliation does not compare it.
                    let snapshot = OrderSnapshot {
                        order_no: placed.order_no,
                        member_id: placed.member_id,
                        shop_id: placed.shop_id,
                        shop_name: String::new(),
                        status: placed.status,
                        cancel_reason: None,
                        lines: placed.lines,
                        total_amount: placed.total_amount,
                        delivery_address: placed.delivery_address,
                        request: placed.request,
                        payment: placed.payment.map(|p| PaymentSnapshot {
                            status: p.status,
                            amount: p.amount,
                        }),
                        delivery: None,
                        placed_at: placed.placed_at,
                        changed_at: placed.placed_at,
                        updated_at: placed.updated_at,
                    };
                    sqlx::query(
                        "INSERT INTO order_view (order_no, snapshot) VALUES ($1, $2)
                         ON CONFLICT (order_no) DO NOTHING",
                    )
                    .bind(&snapshot.order_no)
                    .bind(Json(&snapshot))
                    .execute(&mut *tx)
                    .await?;
                }
                OrderStatusChanged::NAME => {
                    let changed: OrderStatusChanged = message.decode()?;
                    sqlx::query(
                        "UPDATE order_view SET snapshot = jsonb_set(snapshot, '{status}', $2)
                         WHERE order_no = $1",
                    )
                    .bind(&changed.order_no)
                    .bind(Json(changed.to))
                    .execute(&mut *tx)
                    .await?;
                }
                // The whole order as legacy holds it: replace.
                OrderResynced::NAME => {
                    let resynced: OrderResynced = message.decode()?;
                    sqlx::query(
                        "INSERT INTO order_view (order_no, snapshot) VALUES ($1, $2)
                         ON CONFLICT (order_no) DO UPDATE SET snapshot = excluded.snapshot",
                    )
                    .bind(&resynced.order.order_no)
                    .bind(Json(&resynced.order))
                    .execute(&mut *tx)
                    .await?;
                }
                other => return Err(HandlerError::NotHandled(other.to_owned())),
            }
            Ok(())
        })
    }
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    after: Option<String>,
    limit: u32,
}

async fn export(State(db): State<PgPool>, Query(page): Query<PageQuery>) -> axum::Json<OrderPage> {
    let orders: Vec<Json<OrderSnapshot>> = sqlx::query_scalar(
        r#"SELECT snapshot FROM order_view
           WHERE ($1::text IS NULL OR order_no COLLATE "C" > $1::text COLLATE "C")
           ORDER BY order_no COLLATE "C" LIMIT $2"#,
    )
    .bind(page.after)
    .bind(i64::from(page.limit))
    .fetch_all(&db)
    .await
    .expect("the stand-in's table");
    let orders: Vec<OrderSnapshot> = orders.into_iter().map(|Json(order)| order).collect();
    // As the façade's export: the next page starts after a full one.
    let next_after = (orders.len() == page.limit as usize)
        .then(|| orders.last().map(|o| o.order_no.clone()))
        .flatten();
    axum::Json(OrderPage { orders, next_after })
}

impl OrderHistory {
    /// Its database, queue (declared before anything is published, so it
    /// sees every order from its first fact), consumer and HTTP server.
    pub async fn start(rig: &Rig) -> Self {
        let unique = uuid::Uuid::now_v7().simple().to_string();
        let db_name = format!("history_{unique}");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"CREATE DATABASE "{db_name}""#
        )))
        .execute(&rig.legacy_admin)
        .await
        .expect("the stand-in's database");
        let options = (*rig.legacy_admin.connect_options())
            .clone()
            .database(&db_name);
        let db = sqlx::postgres::PgPoolOptions::new()
            .max_connections(5)
            .connect_with(options)
            .await
            .expect("the stand-in's database");
        consumer::install(&db).await.expect("the inbox");
        sqlx::query("CREATE TABLE order_view (order_no text PRIMARY KEY, snapshot jsonb NOT NULL)")
            .execute(&db)
            .await
            .expect("the view table");

        let queue = QueueSpec::new(
            &format!("history-{unique}"),
            "legacy-orders",
            &["legacy.order.#"],
        )
        .on_exchange(&rig.exchange);
        let connection = amqp::connect(&rig.amqp_url, "acl-test-setup")
            .await
            .expect("RabbitMQ");
        let channel = connection.create_channel().await.expect("a channel");
        topology::declare(&channel, &queue).await.expect("declare");
        amqp::close(&connection, "declared").await;
        let (stop, stopped) = watch::channel(false);
        let consumer = Consumer::new(
            &queue.name,
            db.clone(),
            &rig.amqp_url,
            queue.clone(),
            ConsumerMetrics::unregistered(),
        )
        .in_aggregate_order();
        let mut until = stopped.clone();
        let consumer = tokio::spawn(consumer.run(ApplyLegacyOrders, async move {
            let _ = until.wait_for(|stop| *stop).await;
        }));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let url = format!(
            "http://{}/v1/export/orders",
            listener.local_addr().expect("an address")
        );
        let app = Router::new()
            .route("/v1/export/orders", get(export))
            .with_state(db.clone());
        let mut until = stopped;
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = until.wait_for(|stop| *stop).await;
                })
                .await
                .expect("the stand-in serves");
        });
        Self {
            db,
            db_name,
            admin: rig.legacy_admin.clone(),
            url,
            queue,
            amqp_url: rig.amqp_url.clone(),
            stop,
            consumer,
        }
    }

    /// What it holds, by order number.
    pub async fn orders(&self) -> BTreeMap<String, OrderSnapshot> {
        let rows: Vec<(String, Json<OrderSnapshot>)> =
            sqlx::query_as("SELECT order_no, snapshot FROM order_view")
                .fetch_all(&self.db)
                .await
                .expect("the view table");
        rows.into_iter()
            .map(|(no, Json(order))| (no, order))
            .collect()
    }

    /// Waits until what it holds satisfies `probe` (a hang guard of 30 s,
    /// not a timing assertion).
    pub async fn wait_until<F>(&self, what: &str, probe: F) -> BTreeMap<String, OrderSnapshot>
    where
        F: Fn(&BTreeMap<String, OrderSnapshot>) -> bool,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let orders = self.orders().await;
            if probe(&orders) {
                return orders;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stand-in never held {what}: {orders:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Loses an order, as a store might.
    pub async fn forget(&self, order_no: &str) {
        sqlx::query("DELETE FROM order_view WHERE order_no = $1")
            .bind(order_no)
            .execute(&self.db)
            .await
            .expect("delete");
    }

    /// Writes `order` over what it holds (or adds it).
    pub async fn put(&self, order: &OrderSnapshot) {
        sqlx::query(
            "INSERT INTO order_view (order_no, snapshot) VALUES ($1, $2)
             ON CONFLICT (order_no) DO UPDATE SET snapshot = excluded.snapshot",
        )
        .bind(&order.order_no)
        .bind(Json(order))
        .execute(&self.db)
        .await
        .expect("put");
    }

    /// Deletes another queue on the test's exchange, with its retry queue
    /// and dead letters.
    pub async fn delete_queue(&self, name: &str) {
        super::delete_queues(&self.amqp_url, name).await;
    }

    /// Stops the consumer and the server; drops its queues and database.
    pub async fn finish(self) {
        let _ = self.stop.send(true);
        self.consumer.await.expect("the consumer stops");
        self.db.close().await;
        let connection = amqp::connect(&self.amqp_url, "acl-test-teardown")
            .await
            .expect("RabbitMQ");
        let channel = connection.create_channel().await.expect("a channel");
        for queue in [
            self.queue.name.clone(),
            self.queue.retry_queue(),
            self.queue.dead_letter_queue(),
            topology::unrouted(&self.queue.exchange),
        ] {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [
            self.queue.exchange.clone(),
            topology::unrouted(&self.queue.exchange),
        ] {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        amqp::close(&connection, "torn down").await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#,
            self.db_name
        )))
        .execute(&self.admin)
        .await
        .expect("drop the stand-in's database");
    }
}
