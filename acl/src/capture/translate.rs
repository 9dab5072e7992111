//! From one legacy transaction to facts in the published language: the
//! heart of the anti-corruption layer. Rows of `tb_order`, `tb_order_item`
//! and `tb_payment` written together become one `legacy.order.placed`;
//! a changed status code becomes a `status_changed` with names, not codes;
//! shops, menu items and members become zero-payload facts.
//!
//! One fact per aggregate and change: a transaction that touches an order
//! and its delivery (a rider picking up) yields one order fact and one
//! delivery fact, each numbered in its own aggregate's sequence by the
//! outbox. Rows the ACL has no fact for (a rider going idle) are dropped
//! here, on purpose: they are the legacy system's own business.

use contracts::Won;
use contracts::legacy::{
    CancelReason, DataTruncated, DeliveryStatus, DeliveryStatusChanged, MemberChanged, MenuChanged,
    OrderLine, OrderPlaced, OrderStatus, OrderStatusChanged, Payment, PaymentStatus,
    PaymentStatusChanged, ShopChanged,
};
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

use super::pgoutput::{Change, ChangeKind, Event, Row, Transaction};

/// The prefix of the logical message sync-back writes in each of its
/// transactions, so the feed does not announce the ACL's own writes back
/// (docs/patterns/anti-corruption-layer.md, loop prevention).
pub const OWN_WRITE_PREFIX: &str = "acl.sync-back";

/// A fact ready for the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    OrderPlaced(OrderPlaced),
    OrderStatusChanged(OrderStatusChanged),
    PaymentStatusChanged(PaymentStatusChanged),
    DeliveryStatusChanged(DeliveryStatusChanged),
    ShopChanged(ShopChanged),
    MenuChanged(MenuChanged),
    MemberChanged(MemberChanged),
    DataTruncated(DataTruncated),
}

/// A legacy row the translation could not read: the transaction is not
/// announced half-way; the feed stops on it and says which row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{table}: {problem}")]
pub struct Untranslatable {
    pub table: String,
    pub problem: String,
}

/// What the feed does with a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Translation {
    /// The facts it announces, in the order they happened.
    Facts(Vec<Fact>),
    /// Sync-back wrote it: announcing it would echo the new services'
    /// own facts back to them.
    OwnWrite,
}

pub fn translate(tx: &Transaction) -> Result<Translation, Untranslatable> {
    let own_write = tx
        .events
        .iter()
        .any(|event| matches!(event, Event::Message { prefix, .. } if prefix == OWN_WRITE_PREFIX));
    if own_write {
        return Ok(Translation::OwnWrite);
    }
    let mut facts = Vec::new();
    for event in &tx.events {
        match event {
            Event::Change(change) => translate_change(tx, change, &mut facts)?,
            Event::Truncate(tables) => facts.push(Fact::DataTruncated(DataTruncated {
                tables: tables.iter().map(|t| published_table_name(t)).collect(),
                truncated_at: tx.committed_at,
            })),
            Event::Message { .. } => {}
        }
    }
    dedup_zero_payload(&mut facts);
    Ok(Translation::Facts(facts))
}

fn translate_change(
    tx: &Transaction,
    change: &Change,
    facts: &mut Vec<Fact>,
) -> Result<(), Untranslatable> {
    let row = Fields {
        table: &change.table,
        row: change.new.as_ref().or(change.old.as_ref()),
    };
    match (change.table.as_str(), change.kind) {
        ("tb_order", ChangeKind::Insert) => facts.push(Fact::OrderPlaced(placed(tx, &row)?)),
        ("tb_order", ChangeKind::Update) => {
            if let Some(fact) = order_status_changed(tx, change)? {
                facts.push(Fact::OrderStatusChanged(fact));
            }
        }
        ("tb_payment", ChangeKind::Update) => {
            if let Some(fact) = payment_status_changed(tx, change)? {
                facts.push(Fact::PaymentStatusChanged(fact));
            }
        }
        ("tb_delivery", ChangeKind::Insert | ChangeKind::Update) => {
            if let Some(fact) = delivery_status_changed(tx, change)? {
                facts.push(Fact::DeliveryStatusChanged(fact));
            }
        }
        ("tb_shop", _) => facts.push(Fact::ShopChanged(ShopChanged {
            shop_id: row.int("shop_id")?,
        })),
        ("tb_menu", _) => facts.push(Fact::MenuChanged(MenuChanged {
            menu_id: row.int("menu_id")?,
            shop_id: row.int("shop_id")?,
        })),
        ("tb_member", _) => facts.push(Fact::MemberChanged(MemberChanged {
            member_id: row.int("mbr_id")?,
        })),
        // Lines and the first payment travel inside `placed`; deletions of
        // orders are not something Baedal does (reconciliation finds them).
        _ => {}
    }
    Ok(())
}

fn placed(tx: &Transaction, order: &Fields<'_>) -> Result<OrderPlaced, Untranslatable> {
    let order_no = order.text("ord_no")?.to_owned();
    let mut lines = Vec::new();
    let mut payment = None;
    for change in inserts_of(tx, &order_no) {
        let fields = Fields {
            table: &change.table,
            row: change.new.as_ref(),
        };
        match change.table.as_str() {
            "tb_order_item" => lines.push((
                fields.int("item_seq")?,
                OrderLine {
                    menu_id: fields.int("menu_id")?,
                    name: fields.text("menu_nm")?.to_owned(),
                    unit_price: fields.int("unit_price")?,
                    quantity: u32::try_from(fields.int("qty")?)
                        .map_err(|_| fields.problem("qty", "negative"))?,
                },
            )),
            "tb_payment" => {
                payment = Some(Payment {
                    status: fields.code("pay_stat_cd", PaymentStatus::from_legacy_code)?,
                    amount: fields.int("pay_amt")?,
                });
            }
            _ => {}
        }
    }
    lines.sort_by_key(|(seq, _)| *seq);
    Ok(OrderPlaced {
        order_no,
        member_id: order.int("mbr_id")?,
        shop_id: order.int("shop_id")?,
        status: order.code("ord_stat_cd", OrderStatus::from_legacy_code)?,
        lines: lines.into_iter().map(|(_, line)| line).collect(),
        total_amount: order.int("tot_amt")?,
        delivery_address: order.text("dlv_addr")?.to_owned(),
        placed_at: order.time("reg_dt")?,
        payment,
        request: order
            .row
            .and_then(|row| row.get("req_msg"))
            .map(str::to_owned),
        updated_at: order.optional_time("upd_dt")?,
    })
}

/// Inserts of an order's lines and payment within the transaction.
fn inserts_of<'a>(tx: &'a Transaction, order_no: &'a str) -> impl Iterator<Item = &'a Change> {
    tx.events.iter().filter_map(move |event| match event {
        Event::Change(change)
            if change.kind == ChangeKind::Insert
                && change.new.as_ref().and_then(|row| row.get("ord_no")) == Some(order_no) =>
        {
            Some(change)
        }
        _ => None,
    })
}

/// The old and new values of a status column, when it changed.
fn status_change<'a>(
    change: &'a Change,
    column: &str,
) -> Result<Option<(Option<&'a str>, &'a str)>, Untranslatable> {
    let new = Fields {
        table: &change.table,
        row: change.new.as_ref(),
    };
    let to = new.text(column)?;
    let from = change.old.as_ref().and_then(|row| row.get(column));
    if change.kind == ChangeKind::Update && from == Some(to) {
        return Ok(None);
    }
    if change.kind == ChangeKind::Update && from.is_none() {
        return Err(new.problem(column, "no old value (is REPLICA IDENTITY FULL set?)"));
    }
    Ok(Some((from, to)))
}

fn order_status_changed(
    tx: &Transaction,
    change: &Change,
) -> Result<Option<OrderStatusChanged>, Untranslatable> {
    let Some((from, to)) = status_change(change, "ord_stat_cd")? else {
        return Ok(None);
    };
    let new = Fields {
        table: &change.table,
        row: change.new.as_ref(),
    };
    let order_no = new.text("ord_no")?;
    let to_status = new.code("ord_stat_cd", OrderStatus::from_legacy_code)?;
    let reason = match to_status {
        OrderStatus::Rejected | OrderStatus::Cancelled => new
            .row
            .and_then(|row| row.get("cncl_rsn_cd"))
            .map(CancelReason::from_legacy_code),
        _ => None,
    };
    Ok(Some(OrderStatusChanged {
        order_no: order_no.to_owned(),
        from: code_of(&new, "ord_stat_cd", from, OrderStatus::from_legacy_code)?,
        to: code_of(&new, "ord_stat_cd", Some(to), OrderStatus::from_legacy_code)?,
        rider_id: rider_assigned_with(tx, order_no),
        reason,
        changed_at: tx.committed_at,
        updated_at: new.optional_time("upd_dt")?,
    }))
}

/// The rider a delivery row of the same transaction assigns to the order
/// (a delivery that becomes `ASSIGNED`, or changes hands).
fn rider_assigned_with(tx: &Transaction, order_no: &str) -> Option<i64> {
    tx.events.iter().find_map(|event| match event {
        Event::Change(change) if change.table == "tb_delivery" => {
            let row = change.new.as_ref()?;
            let old_rider = change.old.as_ref().and_then(|old| old.get("rider_id"));
            let assigned = row.get("dlv_stat_cd") == Some("ASSIGNED")
                && (change.kind == ChangeKind::Insert || old_rider != row.get("rider_id"));
            (row.get("ord_no") == Some(order_no) && assigned)
                .then(|| row.get("rider_id")?.parse().ok())
                .flatten()
        }
        _ => None,
    })
}

fn payment_status_changed(
    tx: &Transaction,
    change: &Change,
) -> Result<Option<PaymentStatusChanged>, Untranslatable> {
    let Some((from, to)) = status_change(change, "pay_stat_cd")? else {
        return Ok(None);
    };
    let new = Fields {
        table: &change.table,
        row: change.new.as_ref(),
    };
    Ok(Some(PaymentStatusChanged {
        order_no: new.text("ord_no")?.to_owned(),
        from: code_of(&new, "pay_stat_cd", from, PaymentStatus::from_legacy_code)?,
        to: code_of(
            &new,
            "pay_stat_cd",
            Some(to),
            PaymentStatus::from_legacy_code,
        )?,
        amount: new.int("pay_amt")?,
        changed_at: tx.committed_at,
    }))
}

fn delivery_status_changed(
    tx: &Transaction,
    change: &Change,
) -> Result<Option<DeliveryStatusChanged>, Untranslatable> {
    let new = Fields {
        table: &change.table,
        row: change.new.as_ref(),
    };
    let rider_id = new.row.and_then(|row| row.get("rider_id"));
    let old_rider_id = change.old.as_ref().and_then(|row| row.get("rider_id"));
    let status = status_change(change, "dlv_stat_cd")?;
    let (from, to) = match status {
        Some(change) => change,
        // Same status, another rider: still news.
        None if rider_id != old_rider_id => {
            let to = new.text("dlv_stat_cd")?;
            (Some(to), to)
        }
        None => return Ok(None),
    };
    Ok(Some(DeliveryStatusChanged {
        order_no: new.text("ord_no")?.to_owned(),
        from: match from {
            Some(code) => Some(code_of(
                &new,
                "dlv_stat_cd",
                Some(code),
                DeliveryStatus::from_legacy_code,
            )?),
            None => None,
        },
        to: code_of(
            &new,
            "dlv_stat_cd",
            Some(to),
            DeliveryStatus::from_legacy_code,
        )?,
        rider_name: rider_id.and_then(|id| rider_name_in(tx, id)),
        rider_id: rider_id.and_then(|id| id.parse().ok()),
        changed_at: tx.committed_at,
    }))
}

/// The name of rider `rider_id` as the transaction last wrote the rider's
/// row: Baedal marks a rider busy in the transaction that assigns them.
fn rider_name_in(tx: &Transaction, rider_id: &str) -> Option<String> {
    tx.events.iter().rev().find_map(|event| match event {
        Event::Change(change) if change.table == "tb_rider" => {
            let row = change.new.as_ref()?;
            (row.get("rider_id") == Some(rider_id))
                .then(|| row.get("rider_nm").map(str::to_owned))
                .flatten()
        }
        _ => None,
    })
}

fn code_of<T>(
    fields: &Fields<'_>,
    column: &str,
    code: Option<&str>,
    read: fn(&str) -> Option<T>,
) -> Result<T, Untranslatable> {
    let code = code.ok_or_else(|| fields.problem(column, "missing"))?;
    read(code).ok_or_else(|| fields.problem(column, &format!("unknown code {code:?}")))
}

/// Several changes to one shop in one transaction are one fact: the
/// consumer reads the shop's current state anyway.
fn dedup_zero_payload(facts: &mut Vec<Fact>) {
    let mut seen = std::collections::HashSet::new();
    facts.retain(|fact| match fact {
        Fact::ShopChanged(f) => seen.insert(("shop", f.shop_id)),
        Fact::MenuChanged(f) => seen.insert(("menu", f.menu_id)),
        Fact::MemberChanged(f) => seen.insert(("member", f.member_id)),
        _ => true,
    });
}

/// A legacy table's name in the published language.
fn published_table_name(table: &str) -> String {
    match table {
        "tb_order" => "orders",
        "tb_order_item" => "order_lines",
        "tb_payment" => "payments",
        "tb_delivery" => "deliveries",
        "tb_shop" => "shops",
        "tb_menu" => "menu_items",
        "tb_member" => "members",
        "tb_rider" => "riders",
        other => other.strip_prefix("tb_").unwrap_or(other),
    }
    .to_owned()
}

/// Typed access to a row image, with errors that name the column.
struct Fields<'a> {
    table: &'a str,
    row: Option<&'a Row>,
}

/// `timestamptz` in PostgreSQL's text output (ISO style, any offset).
const PG_TIMESTAMP: &[FormatItem<'static>] = format_description!(
    "[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]][offset_hour sign:mandatory][optional [:[offset_minute]]]"
);

impl<'a> Fields<'a> {
    fn problem(&self, column: &str, what: &str) -> Untranslatable {
        Untranslatable {
            table: self.table.to_owned(),
            problem: format!("{column}: {what}"),
        }
    }

    fn text(&self, column: &str) -> Result<&'a str, Untranslatable> {
        self.row
            .and_then(|row| row.get(column))
            .ok_or_else(|| self.problem(column, "missing"))
    }

    fn int(&self, column: &str) -> Result<Won, Untranslatable> {
        let text = self.text(column)?;
        text.parse()
            .map_err(|_| self.problem(column, &format!("not an integer: {text:?}")))
    }

    fn code<T>(&self, column: &str, read: fn(&str) -> Option<T>) -> Result<T, Untranslatable> {
        code_of(self, column, Some(self.text(column)?), read)
    }

    /// A time column that may be NULL or missing.
    fn optional_time(&self, column: &str) -> Result<Option<OffsetDateTime>, Untranslatable> {
        match self.row.and_then(|row| row.get(column)) {
            Some(_) => self.time(column).map(Some),
            None => Ok(None),
        }
    }

    fn time(&self, column: &str) -> Result<OffsetDateTime, Untranslatable> {
        let text = self.text(column)?;
        OffsetDateTime::parse(text, PG_TIMESTAMP)
            .map(|t| t.to_offset(time::UtcOffset::UTC))
            .map_err(|_| self.problem(column, &format!("not a timestamp: {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::capture::pgoutput::Lsn;

    fn row(pairs: &[(&str, Option<&str>)]) -> Row {
        Row(pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
            .collect())
    }

    fn change(table: &str, kind: ChangeKind, old: Option<Row>, new: Option<Row>) -> Event {
        Event::Change(Change {
            table: table.into(),
            kind,
            old,
            new,
        })
    }

    fn tx(events: Vec<Event>) -> Transaction {
        Transaction {
            xid: 7,
            committed_at: datetime!(2026-11-30 01:02:03 UTC),
            end_lsn: Lsn(1),
            events,
        }
    }

    fn order_row(status: &str) -> Row {
        row(&[
            ("ord_no", Some("20261130-000001")),
            ("mbr_id", Some("1")),
            ("shop_id", Some("2")),
            ("ord_stat_cd", Some(status)),
            ("tot_amt", Some("22000")),
            ("dlv_addr", Some("서울시 강남구")),
            ("req_msg", None),
            ("cncl_rsn_cd", None),
            ("reg_dt", Some("2026-11-30 10:02:03.5+09")),
            ("upd_dt", Some("2026-11-30 10:02:03.5+09")),
        ])
    }

    fn facts(translation: Translation) -> Vec<Fact> {
        match translation {
            Translation::Facts(facts) => facts,
            Translation::OwnWrite => panic!("not an own write"),
        }
    }

    #[test]
    fn an_order_its_lines_and_its_payment_are_one_placed_fact() {
        let item = |seq: &str, menu: &str, name: &str| {
            row(&[
                ("ord_no", Some("20261130-000001")),
                ("item_seq", Some(seq)),
                ("menu_id", Some(menu)),
                ("menu_nm", Some(name)),
                ("unit_price", Some("11000")),
                ("qty", Some("1")),
                ("amt", Some("11000")),
            ])
        };
        let payment = row(&[
            ("ord_no", Some("20261130-000001")),
            ("pay_stat_cd", Some("REQ")),
            ("pay_amt", Some("22000")),
        ]);
        let tx = tx(vec![
            change("tb_order", ChangeKind::Insert, None, Some(order_row("10"))),
            change(
                "tb_order_item",
                ChangeKind::Insert,
                None,
                Some(item("2", "5", "된장찌개")),
            ),
            change(
                "tb_order_item",
                ChangeKind::Insert,
                None,
                Some(item("1", "4", "김치찌개")),
            ),
            change("tb_payment", ChangeKind::Insert, None, Some(payment)),
        ]);
        let facts = facts(translate(&tx).unwrap());
        assert_eq!(facts.len(), 1);
        let Fact::OrderPlaced(placed) = &facts[0] else {
            panic!("{facts:?}")
        };
        assert_eq!(placed.status, OrderStatus::Placed);
        assert_eq!(placed.placed_at, datetime!(2026-11-30 01:02:03.5 UTC));
        assert_eq!(placed.updated_at, Some(placed.placed_at));
        assert_eq!(placed.request, None, "req_msg is NULL");
        let names: Vec<&str> = placed.lines.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["김치찌개", "된장찌개"]);
        assert_eq!(
            placed.payment,
            Some(Payment {
                status: PaymentStatus::Requested,
                amount: 22_000
            })
        );
    }

    #[test]
    fn an_update_that_keeps_the_status_is_no_fact_and_a_missing_old_row_is_an_error() {
        let same = tx(vec![change(
            "tb_order",
            ChangeKind::Update,
            Some(order_row("20")),
            Some(order_row("20")),
        )]);
        assert_eq!(facts(translate(&same).unwrap()), vec![]);
        let blind = tx(vec![change(
            "tb_order",
            ChangeKind::Update,
            None,
            Some(order_row("30")),
        )]);
        let error = translate(&blind).unwrap_err();
        assert!(error.problem.contains("REPLICA IDENTITY"), "{error}");
    }

    #[test]
    fn an_unknown_status_code_stops_the_feed_with_the_column_named() {
        let tx = tx(vec![change(
            "tb_order",
            ChangeKind::Update,
            Some(order_row("20")),
            Some(order_row("25")),
        )]);
        let error = translate(&tx).unwrap_err();
        assert_eq!(
            error.to_string(),
            "tb_order: ord_stat_cd: unknown code \"25\""
        );
    }

    #[test]
    fn a_transaction_marked_by_sync_back_is_not_announced() {
        let tx = tx(vec![
            Event::Message {
                prefix: OWN_WRITE_PREFIX.into(),
                content: b"ordering.order.placed.v1".to_vec(),
            },
            change("tb_order", ChangeKind::Insert, None, Some(order_row("20"))),
        ]);
        assert_eq!(translate(&tx).unwrap(), Translation::OwnWrite);
    }

    #[test]
    fn repeated_changes_to_one_shop_are_one_zero_payload_fact() {
        let shop = row(&[("shop_id", Some("3"))]);
        let tx = tx(vec![
            change(
                "tb_shop",
                ChangeKind::Update,
                Some(shop.clone()),
                Some(shop.clone()),
            ),
            change(
                "tb_shop",
                ChangeKind::Update,
                Some(shop.clone()),
                Some(shop),
            ),
        ]);
        assert_eq!(
            facts(translate(&tx).unwrap()),
            vec![Fact::ShopChanged(ShopChanged { shop_id: 3 })]
        );
    }
}
