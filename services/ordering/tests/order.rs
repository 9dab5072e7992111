//! The Order aggregate's rules and status machine, as the ordering
//! language states them (ARCHITECTURE §5) and Baedal has always applied
//! them: the same checks in the same order, the same limits.

use ordering::domain::order::Pricing;
use ordering::domain::{
    CancelReason, MenuItem, MinuteOfDay, NewOrder, OpeningHours, Order, OrderError, OrderEvent,
    OrderNo, OrderStatus, Refund, RequestedItem, Shop, Won,
};
use std::collections::BTreeSet;

use ordering::domain::OrderSnapshot;
use time::OffsetDateTime;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-11-30 03:00 UTC);
const LATER: OffsetDateTime = datetime!(2026-11-30 03:10 UTC);

fn won(amount: i64) -> Won {
    Won::new(amount).expect("an amount")
}

fn shop() -> Shop {
    Shop {
        shop_id: 4,
        name: "바삭치킨".to_owned(),
        hours: OpeningHours {
            open: MinuteOfDay::parse_hhmm("1100").expect("valid"),
            close: MinuteOfDay::parse_hhmm("2300").expect("valid"),
        },
        minimum: won(15_000),
    }
}

fn menu() -> Vec<MenuItem> {
    let item = |menu_id, shop_id, name: &str, price, on_sale| MenuItem {
        menu_id,
        shop_id,
        name: name.to_owned(),
        price: won(price),
        on_sale,
    };
    vec![
        item(31, 4, "후라이드", 18_500, true),
        item(32, 4, "양념", 19_500, true),
        item(33, 4, "콜라 1.25L", 2_500, true),
        item(40, 4, "반반", 20_000, false),
        item(51, 5, "짜장면", 7_000, true),
    ]
}

fn request(items: &[(i64, i64)]) -> NewOrder {
    NewOrder {
        member_id: 3,
        shop_id: 4,
        items: items
            .iter()
            .map(|&(menu_id, quantity)| RequestedItem { menu_id, quantity })
            .collect(),
        address: None,
        request: Some("문 앞에 놓아 주세요".to_owned()),
    }
}

fn place_at(request: &NewOrder, hhmm: &str) -> Result<Order, OrderError> {
    let shop = shop();
    let menu = menu();
    let priced = Order::price(
        request,
        Pricing {
            member_address: Some("서울시 마포구 1"),
            shop: Some(&shop),
            menu: &menu,
            minute: MinuteOfDay::parse_hhmm(hhmm).expect("valid"),
        },
    )?;
    let (order, event) = priced.place(OrderNo::parse("20261130-000123").expect("valid"), NOW);
    assert_eq!(event, OrderEvent::Placed);
    Ok(order)
}

fn place(request: &NewOrder) -> Result<Order, OrderError> {
    place_at(request, "1200")
}

fn paid_order() -> Order {
    let mut order = place(&request(&[(31, 2)])).expect("placed");
    order.paid("pay_1", NOW).expect("paid");
    order
}

#[test]
fn an_order_is_placed_at_the_prices_of_the_moment_with_its_total() {
    let order = place(&request(&[(31, 2), (33, 1)])).expect("placed");
    assert_eq!(order.order_no().as_str(), "20261130-000123");
    assert_eq!(order.status(), OrderStatus::Placed);
    assert_eq!(order.total(), won(39_500));
    assert_eq!(
        order
            .lines()
            .iter()
            .map(|l| (
                l.menu_id,
                l.name.as_str(),
                l.unit_price.amount(),
                l.quantity.get()
            ))
            .collect::<Vec<_>>(),
        [(31, "후라이드", 18_500, 2), (33, "콜라 1.25L", 2_500, 1)]
    );
    assert_eq!(
        order.address(),
        "서울시 마포구 1",
        "the member's own address"
    );
    assert_eq!(order.refund(), Refund::NotOwed);
    let mut elsewhere = request(&[(31, 1)]);
    elsewhere.address = Some("  서울시 종로구 2 ".into());
    assert_eq!(
        place(&elsewhere).expect("placed").address(),
        "서울시 종로구 2"
    );
}

#[test]
fn the_members_own_address_is_kept_as_it_is_on_file_and_a_given_one_is_trimmed() {
    // Baedal trims only what comes with the order (`monolith/src/orders.rs`).
    let shop = shop();
    let menu = menu();
    let priced = Order::price(
        &request(&[(31, 1)]),
        Pricing {
            member_address: Some(" 서울시 마포구 1 "),
            shop: Some(&shop),
            menu: &menu,
            minute: MinuteOfDay::parse_hhmm("1200").expect("valid"),
        },
    )
    .expect("priced");
    let (order, _) = priced.place(OrderNo::parse("20261130-000124").expect("valid"), NOW);
    assert_eq!(order.address(), " 서울시 마포구 1 ");
}

#[test]
fn the_request_alone_is_checked_first() {
    let long = "가".repeat(201);
    // Each case also names an item of another shop (51): the request's own
    // fault is what is reported.
    let mut too_long_address = request(&[(31, 1), (51, 1)]);
    too_long_address.address = Some(long.clone());
    let mut too_long_note = request(&[(31, 1), (51, 1)]);
    too_long_note.request = Some(long);
    let mut blank_address = request(&[(31, 1), (51, 1)]);
    blank_address.address = Some("  ".into());
    let fifty_one: Vec<(i64, i64)> = (1..=51).map(|id| (id, 1)).collect();
    let cases = [
        (request(&[]), OrderError::ItemCount { count: 0, max: 50 }),
        (
            request(&fifty_one),
            OrderError::ItemCount { count: 51, max: 50 },
        ),
        (
            request(&[(51, 0)]),
            OrderError::InvalidQuantity {
                menu_id: Some(51),
                quantity: 0,
            },
        ),
        (
            request(&[(31, 1), (51, 100)]),
            OrderError::InvalidQuantity {
                menu_id: Some(51),
                quantity: 100,
            },
        ),
        (
            request(&[(51, 1), (31, 1), (51, 2)]),
            OrderError::DuplicateItem { menu_id: 51 },
        ),
        (
            too_long_address,
            OrderError::TextTooLong {
                field: "address",
                max: 200,
            },
        ),
        (
            too_long_note,
            OrderError::TextTooLong {
                field: "request",
                max: 200,
            },
        ),
        (blank_address, OrderError::BlankAddress),
    ];
    for (request, expected) in cases {
        assert_eq!(place(&request).expect_err("refused"), expected);
    }
    // Exactly at the limits is fine.
    let mut at_limits = request(&[(31, 99)]);
    at_limits.address = Some("가".repeat(200));
    assert_eq!(place(&at_limits).map(|o| o.total()), Ok(won(18_500 * 99)));
}

#[test]
fn the_shop_must_take_orders_and_be_open() {
    let menu = menu();
    let at = |shop| Pricing {
        member_address: Some("서울시 마포구 1"),
        shop,
        menu: &menu,
        minute: MinuteOfDay::parse_hhmm("1200").expect("valid"),
    };
    assert_eq!(
        Order::price(&request(&[(31, 1)]), at(None)).expect_err("refused"),
        OrderError::UnknownShop { shop_id: 4 }
    );
    let no_member = Pricing {
        member_address: None,
        ..at(None)
    };
    assert_eq!(
        Order::price(&request(&[(31, 1)]), no_member).expect_err("refused"),
        OrderError::UnknownMember { member_id: 3 },
        "the member comes before the shop, as in Baedal"
    );
    let other = Shop {
        shop_id: 5,
        ..shop()
    };
    assert_eq!(
        Order::price(&request(&[(31, 1)]), at(Some(&other))).expect_err("refused"),
        OrderError::UnknownShop { shop_id: 4 },
        "the catalog's answer about another shop is no answer"
    );
    let closed = place_at(&request(&[(31, 1)]), "2300").expect_err("refused");
    assert_eq!(
        closed,
        OrderError::ShopClosed {
            open: "11:00".into(),
            close: "23:00".into()
        }
    );
    assert_eq!(
        closed.to_string(),
        "the shop is open 11:00–23:00 (Korean time)"
    );
}

#[test]
fn each_item_must_be_the_shops_and_on_sale_and_the_total_reach_the_minimum() {
    assert_eq!(
        place(&request(&[(31, 1), (51, 1)])).expect_err("refused"),
        OrderError::MenuItemNotInShop {
            shop_id: 4,
            menu_id: 51
        }
    );
    assert_eq!(
        place(&request(&[(31, 1), (77, 1)])).expect_err("refused"),
        OrderError::MenuItemNotInShop {
            shop_id: 4,
            menu_id: 77
        }
    );
    assert_eq!(
        place(&request(&[(31, 1), (40, 1)])).expect_err("refused"),
        OrderError::MenuItemNotOnSale {
            name: "반반".into()
        }
    );
    let below = place(&request(&[(33, 2)])).expect_err("refused");
    assert_eq!(
        below,
        OrderError::BelowMinimum {
            minimum: 15_000,
            total: 5_000
        }
    );
    assert_eq!(
        below.to_string(),
        "this shop delivers from 15000 won; the order comes to 5000 won"
    );
}

#[test]
fn an_order_goes_from_placed_to_delivered_one_step_at_a_time() {
    let mut order = place(&request(&[(31, 1)])).expect("placed");
    assert_eq!(
        order.paid("pay_1", NOW),
        Ok(vec![OrderEvent::Paid {
            payment_id: "pay_1".into()
        }])
    );
    assert_eq!(order.accepted(NOW), Ok(vec![OrderEvent::Accepted]));
    assert_eq!(order.picked_up(NOW), Ok(vec![OrderEvent::PickedUp]));
    assert_eq!(order.delivered(LATER), Ok(vec![OrderEvent::Delivered]));
    assert_eq!(order.status(), OrderStatus::Delivered);
    assert!(order.status().is_final());
    assert_eq!(order.payment_id(), Some("pay_1"));
    assert_eq!((order.placed_at(), order.updated_at()), (NOW, LATER));
}

#[test]
fn a_step_out_of_turn_is_a_conflict_and_changes_nothing() {
    let mut order = place(&request(&[(31, 1)])).expect("placed");
    let before = order.clone();
    assert_eq!(
        order.accepted(LATER),
        Err(OrderError::Conflict {
            status: OrderStatus::Placed,
            action: "accepted"
        })
    );
    assert_eq!(
        order.delivered(LATER),
        Err(OrderError::Conflict {
            status: OrderStatus::Placed,
            action: "delivered"
        })
    );
    assert_eq!(order, before);
}

#[test]
fn a_fact_delivered_twice_changes_nothing_the_second_time() {
    let mut order = paid_order();
    assert_eq!(order.paid("pay_1", LATER), Ok(vec![]));
    assert_eq!(
        order.paid("pay_2", LATER),
        Err(OrderError::Conflict {
            status: OrderStatus::Paid,
            action: "paid"
        }),
        "a second, different payment is not the same fact"
    );
    assert_eq!(order.accepted(NOW), Ok(vec![OrderEvent::Accepted]));
    let after_first = order.clone();
    assert_eq!(order.accepted(LATER), Ok(vec![]));
    assert_eq!(order, after_first, "not even the time moves");
}

#[test]
fn a_rejected_order_is_refunded_by_baedal_and_ordering_adopts_it() {
    // ADR 0020: the shop rejects on Baedal's board, whose own code refunds.
    let mut order = paid_order();
    assert_eq!(order.rejected(NOW), Ok(vec![OrderEvent::Rejected]));
    assert_eq!(
        (order.status(), order.refund()),
        (OrderStatus::Rejected, Refund::ByLegacy)
    );
    assert_eq!(
        order.refunded(LATER),
        Err(OrderError::Conflict {
            status: OrderStatus::Rejected,
            action: "refunded (ordering owes nothing)"
        }),
        "ordering never refunds what Baedal refunds"
    );
    assert_eq!(
        order.refunded_by_legacy(LATER),
        Ok(vec![OrderEvent::Refunded])
    );
    assert_eq!(
        order.refunded_by_legacy(LATER),
        Ok(vec![]),
        "adopting is idempotent"
    );
    assert_eq!(order.refund(), Refund::Refunded);
}

#[test]
fn nothing_is_refunded_that_was_never_charged() {
    let mut order = place(&request(&[(31, 1)])).expect("placed");
    assert_eq!(
        order.cancel_by_member(NOW),
        Ok(vec![OrderEvent::Cancelled {
            reason: CancelReason::Member
        }])
    );
    assert_eq!(order.refund(), Refund::NotOwed);
    assert_eq!(
        order.refunded(LATER),
        Err(OrderError::Conflict {
            status: OrderStatus::Cancelled,
            action: "refunded (ordering owes nothing)"
        })
    );
}

#[test]
fn a_member_cancels_before_the_shop_accepts_and_not_after() {
    let mut paid = paid_order();
    assert_eq!(
        paid.cancel_by_member(NOW),
        Ok(vec![OrderEvent::Cancelled {
            reason: CancelReason::Member
        }])
    );
    assert_eq!(
        (paid.status(), paid.cancel_reason(), paid.refund()),
        (
            OrderStatus::Cancelled,
            Some(CancelReason::Member),
            Refund::Owed
        )
    );
    assert_eq!(
        paid.cancel_by_member(LATER),
        Ok(vec![]),
        "a second cancel is the first"
    );

    let mut accepted = paid_order();
    accepted.accepted(NOW).expect("accepted");
    let refused = accepted.cancel_by_member(LATER).expect_err("refused");
    assert_eq!(
        refused,
        OrderError::NotCancellable {
            status: OrderStatus::Accepted
        }
    );
    assert_eq!(
        refused.to_string(),
        "the order is accepted; only orders the shop has not accepted can be cancelled"
    );
    assert_eq!(accepted.status(), OrderStatus::Accepted);
}

#[test]
fn a_refused_payment_ends_a_placed_order_without_a_refund() {
    for reason in [CancelReason::PaymentDeclined, CancelReason::PaymentFailed] {
        let mut order = place(&request(&[(31, 1)])).expect("placed");
        assert_eq!(
            order.payment_refused(reason, NOW),
            Ok(vec![OrderEvent::Cancelled { reason }])
        );
        assert_eq!(order.payment_refused(reason, LATER), Ok(vec![]));
        assert_eq!(
            (order.status(), order.refund()),
            (OrderStatus::Cancelled, Refund::NotOwed)
        );
    }
    let mut paid = paid_order();
    assert_eq!(
        paid.payment_refused(CancelReason::PaymentFailed, LATER),
        Err(OrderError::Conflict {
            status: OrderStatus::Paid,
            action: "refused payment"
        })
    );
}

#[test]
fn no_decision_before_the_deadline_cancels_a_paid_order_with_a_refund() {
    let mut waiting = paid_order();
    assert_eq!(
        waiting.decision_timed_out(LATER),
        vec![OrderEvent::Cancelled {
            reason: CancelReason::NoDecision
        }]
    );
    assert_eq!(
        (waiting.status(), waiting.refund()),
        (OrderStatus::Cancelled, Refund::Owed)
    );
    assert_eq!(waiting.decision_timed_out(LATER), vec![]);

    let mut decided = paid_order();
    decided.accepted(NOW).expect("accepted");
    assert_eq!(
        decided.decision_timed_out(LATER),
        vec![],
        "a decision in time stands"
    );
    assert_eq!(decided.status(), OrderStatus::Accepted);
}

#[test]
fn the_shops_acceptance_after_a_members_cancel_is_a_conflict_to_settle() {
    // ADR 0015: the two can cross; the order does not silently flip back.
    let mut order = paid_order();
    order.cancel_by_member(NOW).expect("cancelled");
    assert_eq!(
        order.accepted(LATER),
        Err(OrderError::Conflict {
            status: OrderStatus::Cancelled,
            action: "accepted"
        })
    );
    assert_eq!(order.status(), OrderStatus::Cancelled);
}

#[test]
fn an_order_kept_by_a_store_comes_back_as_it_was_in_every_state() {
    let placed = place(&request(&[(31, 2), (33, 1)])).expect("placed");
    let mut delivered = paid_order();
    delivered.accepted(NOW).expect("accepted");
    delivered.picked_up(NOW).expect("picked up");
    delivered.delivered(LATER).expect("delivered");
    let mut refunded = paid_order();
    refunded.rejected(NOW).expect("rejected");
    refunded.refunded_by_legacy(LATER).expect("refunded");
    let mut declined = place(&request(&[(31, 1)])).expect("placed");
    declined
        .payment_refused(CancelReason::PaymentDeclined, NOW)
        .expect("declined");
    let mut timed_out = paid_order();
    timed_out.decision_timed_out(LATER);
    for order in [
        placed,
        paid_order(),
        delivered,
        refunded,
        declined,
        timed_out,
    ] {
        assert_eq!(Order::restore(order.snapshot()), Ok(order));
    }
}

/// Every (status, reason, paid, refund) the machine reaches from a placed
/// order, by trying every change on every state reached.
fn reachable_states() -> BTreeSet<(String, Option<String>, bool, String)> {
    type Change = fn(&mut Order) -> Result<Vec<OrderEvent>, OrderError>;
    let changes: [Change; 13] = [
        |o| o.cancelled_on_legacy(LATER),
        |o| o.refunded_by_legacy(LATER),
        |o| o.paid("pay_late", LATER),
        |o| o.paid("pay_1", LATER),
        |o| o.payment_refused(CancelReason::PaymentDeclined, LATER),
        |o| o.payment_refused(CancelReason::PaymentFailed, LATER),
        |o| o.accepted(LATER),
        |o| o.rejected(LATER),
        |o| o.picked_up(LATER),
        |o| o.delivered(LATER),
        |o| o.cancel_by_member(LATER),
        |o| Ok(o.decision_timed_out(LATER)),
        |o| o.refunded(LATER),
    ];
    let key = |o: &Order| {
        (
            format!("{:?}", o.status()),
            o.cancel_reason().map(|r| format!("{r:?}")),
            o.payment_id().is_some(),
            format!("{:?}", o.refund()),
        )
    };
    let start = place(&request(&[(31, 1)])).expect("placed");
    let mut seen = BTreeSet::from([key(&start)]);
    let mut frontier = vec![start];
    while let Some(order) = frontier.pop() {
        for change in changes {
            let mut next = order.clone();
            if change(&mut next).is_ok() && seen.insert(key(&next)) {
                frontier.push(next);
            }
        }
    }
    seen
}

#[test]
fn a_store_gives_back_exactly_the_states_the_machine_reaches() {
    let reachable = reachable_states();
    assert_eq!(reachable.len(), 17, "{reachable:#?}");
    let statuses = [
        OrderStatus::Placed,
        OrderStatus::Paid,
        OrderStatus::Accepted,
        OrderStatus::PickedUp,
        OrderStatus::Delivered,
        OrderStatus::Rejected,
        OrderStatus::Cancelled,
    ];
    let reasons = [
        None,
        Some(CancelReason::Member),
        Some(CancelReason::PaymentDeclined),
        Some(CancelReason::PaymentFailed),
        Some(CancelReason::NoDecision),
    ];
    let base = place(&request(&[(31, 1)])).expect("placed").snapshot();
    let mut restored = 0;
    for status in statuses {
        for reason in reasons {
            for paid in [false, true] {
                for refund in [
                    Refund::NotOwed,
                    Refund::Owed,
                    Refund::ByLegacy,
                    Refund::Refunded,
                ] {
                    let snapshot = OrderSnapshot {
                        status,
                        cancel_reason: reason,
                        payment_id: paid.then(|| "pay_1".to_owned()),
                        refund,
                        ..base.clone()
                    };
                    let key = (
                        format!("{status:?}"),
                        reason.map(|r| format!("{r:?}")),
                        paid,
                        format!("{refund:?}"),
                    );
                    let result = Order::restore(snapshot);
                    assert_eq!(
                        result.is_ok(),
                        reachable.contains(&key),
                        "{key:?}: {result:?}"
                    );
                    restored += usize::from(result.is_ok());
                }
            }
        }
    }
    assert_eq!(restored, reachable.len());
}

#[test]
fn a_stored_order_the_rules_could_not_have_made_is_refused() {
    let corrupt = |what: &str| OrderError::Corrupt {
        order_no: "20261130-000123".into(),
        what: what.into(),
    };
    let order = place(&request(&[(31, 2), (33, 1)])).expect("placed");
    let mut wrong_total = order.snapshot();
    wrong_total.total = won(1);
    let mut no_lines = order.snapshot();
    no_lines.lines.clear();
    let mut twice = order.snapshot();
    twice.lines[1].menu_id = 31;
    let mut blank = order.snapshot();
    blank.address = " ".into();
    let mut early = order.snapshot();
    early.updated_at = datetime!(2026-11-30 02:59 UTC);
    for (snapshot, what) in [
        (wrong_total, "its lines do not add up to its total"),
        (no_lines, "its lines do not add up to its total"),
        (twice, "a menu item appears on two lines"),
        (blank, "it has no address"),
        (early, "it changed before it was placed"),
    ] {
        assert_eq!(Order::restore(snapshot), Err(corrupt(what)));
    }
}

#[test]
fn a_fact_that_arrives_late_changes_nothing() {
    // The feed delivers at least once, and a redelivery may come after
    // later facts.
    let mut order = paid_order();
    order.accepted(NOW).expect("accepted");
    order.picked_up(NOW).expect("picked up");
    order.delivered(LATER).expect("delivered");
    let delivered = order.clone();
    assert_eq!(order.accepted(LATER), Ok(vec![]));
    assert_eq!(order.picked_up(LATER), Ok(vec![]));
    assert_eq!(order.paid("pay_1", LATER), Ok(vec![]));
    assert_eq!(order, delivered);
    // Off the way to the door, a step is still a conflict.
    let mut rejected = paid_order();
    rejected.rejected(NOW).expect("rejected");
    assert_eq!(
        rejected.accepted(LATER),
        Err(OrderError::Conflict {
            status: OrderStatus::Rejected,
            action: "accepted"
        })
    );
}

#[test]
fn a_cancel_on_baedal_after_a_rollback_is_adopted_with_baedals_refund() {
    let mut order = paid_order();
    assert_eq!(
        order.cancelled_on_legacy(NOW),
        Ok(vec![OrderEvent::Cancelled {
            reason: CancelReason::Member
        }])
    );
    assert_eq!(order.refund(), Refund::ByLegacy);
    assert_eq!(order.cancelled_on_legacy(LATER), Ok(vec![]));
    let mut accepted = paid_order();
    accepted.accepted(NOW).expect("accepted");
    assert_eq!(
        accepted.cancelled_on_legacy(LATER),
        Err(OrderError::NotCancellable {
            status: OrderStatus::Accepted
        })
    );
}

#[test]
fn a_payment_that_turns_up_after_the_order_ended_is_released_by_ordering() {
    // The member cancelled while the authorisation was on its way.
    let mut order = place(&request(&[(31, 1)])).expect("placed");
    order.cancel_by_member(NOW).expect("cancelled");
    assert_eq!(
        order.paid("pay_late", LATER),
        Ok(vec![]),
        "no fact: it is over"
    );
    assert_eq!(
        (order.status(), order.payment_id(), order.refund()),
        (OrderStatus::Cancelled, Some("pay_late"), Refund::Owed)
    );
    assert_eq!(order.refunded(LATER), Ok(vec![OrderEvent::Refunded]));
    // A second, different payment is not the same fact.
    assert_eq!(
        order.paid("pay_other", LATER),
        Err(OrderError::Conflict {
            status: OrderStatus::Cancelled,
            action: "paid"
        })
    );
}

#[test]
fn baedals_facts_move_a_paid_order_and_end_the_wait_for_the_shop() {
    use ordering::application::follow::{Followed, LegacyFact, follow};
    use ordering::application::ports::{Saga, Step};
    let waiting = Saga::at(Step::AwaitingDecision, LATER);

    let mut order = paid_order();
    assert_eq!(
        follow(&mut order, waiting, LegacyFact::Accepted, LATER),
        Followed::Moved {
            events: vec![OrderEvent::Accepted],
            saga: Saga::DONE
        }
    );
    assert_eq!(
        follow(&mut order, Saga::DONE, LegacyFact::Accepted, LATER),
        Followed::Unchanged,
        "delivered again"
    );
    for (fact, event, status) in [
        (
            LegacyFact::PickedUp,
            OrderEvent::PickedUp,
            OrderStatus::PickedUp,
        ),
        (
            LegacyFact::Delivered,
            OrderEvent::Delivered,
            OrderStatus::Delivered,
        ),
    ] {
        assert_eq!(
            follow(&mut order, Saga::DONE, fact, LATER),
            Followed::Moved {
                events: vec![event],
                saga: Saga::DONE
            }
        );
        assert_eq!(order.status(), status);
    }
    assert_eq!(
        follow(&mut order, Saga::DONE, LegacyFact::PickedUp, LATER),
        Followed::Unchanged,
        "late: the order is past it"
    );
    assert!(matches!(
        follow(&mut order, Saga::DONE, LegacyFact::CancelledByMember, LATER),
        Followed::Contradicted(OrderError::NotCancellable { .. })
    ));

    // A pick-up redelivered ahead of the acceptance waits its turn.
    let mut early = paid_order();
    assert!(matches!(
        follow(&mut early, waiting, LegacyFact::PickedUp, LATER),
        Followed::NotYet(OrderError::Conflict { .. })
    ));
    assert_eq!(early.status(), OrderStatus::Paid, "unchanged");
}

#[test]
fn a_reject_on_the_board_is_baedals_to_refund_and_ordering_adopts_the_refund() {
    use ordering::application::follow::{Followed, LegacyFact, follow};
    use ordering::application::ports::{Saga, Step};
    let waiting = Saga::at(Step::AwaitingDecision, LATER);

    let mut order = paid_order();
    // Baedal's refund announced ahead of the reject waits for it.
    assert!(matches!(
        follow(&mut order, waiting, LegacyFact::Refunded, LATER),
        Followed::NotYet(_)
    ));
    assert_eq!(
        follow(&mut order, waiting, LegacyFact::Rejected, LATER),
        Followed::Moved {
            events: vec![OrderEvent::Rejected],
            saga: Saga::DONE
        }
    );
    assert_eq!(order.refund(), Refund::ByLegacy);
    assert!(matches!(
        follow(&mut order, Saga::DONE, LegacyFact::Accepted, LATER),
        Followed::Contradicted(OrderError::Conflict { .. })
    ));
    assert_eq!(
        follow(&mut order, Saga::DONE, LegacyFact::Refunded, LATER),
        Followed::Moved {
            events: vec![OrderEvent::Refunded],
            saga: Saga::DONE
        }
    );
    assert_eq!(order.refund(), Refund::Refunded);
    assert_eq!(
        follow(&mut order, Saga::DONE, LegacyFact::Refunded, LATER),
        Followed::Unchanged
    );

    let mut cancelled = paid_order();
    assert_eq!(
        follow(
            &mut cancelled,
            waiting,
            LegacyFact::CancelledByMember,
            LATER
        ),
        Followed::Moved {
            events: vec![OrderEvent::Cancelled {
                reason: CancelReason::Member
            }],
            saga: Saga::DONE
        }
    );
    assert_eq!(cancelled.refund(), Refund::ByLegacy);
}
