//! What the ordering rules refuse, in the domain's words. The HTTP adapter
//! maps each to the problem type Baedal answers with (the legacy contract);
//! the domain knows nothing of HTTP.

use super::order::OrderStatus;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("an order has 1 to {max} items; this one has {count}")]
    ItemCount { count: usize, max: usize },
    #[error("menu item {menu_id} appears more than once; raise its quantity instead")]
    DuplicateItem { menu_id: i64 },
    #[error("quantities are 1 to 99; {quantity} is not one")]
    InvalidQuantity {
        /// The item, when the quantity was given for one.
        menu_id: Option<i64>,
        quantity: i64,
    },
    #[error("{field} is at most {max} characters")]
    TextTooLong { field: &'static str, max: usize },
    #[error("address, when given, is not blank")]
    BlankAddress,
    #[error("there is no member {member_id}")]
    UnknownMember { member_id: i64 },
    #[error("shop {shop_id} takes no orders")]
    UnknownShop { shop_id: i64 },
    #[error("the shop is open {open}–{close} (Korean time)")]
    ShopClosed { open: String, close: String },
    #[error("shop {shop_id} has no menu item {menu_id}")]
    MenuItemNotInShop { shop_id: i64, menu_id: i64 },
    #[error("{name} is not on sale now")]
    MenuItemNotOnSale { name: String },
    #[error("this shop delivers from {minimum} won; the order comes to {total} won")]
    BelowMinimum { minimum: i64, total: i64 },
    #[error("an amount is never negative: {0}")]
    InvalidAmount(i64),
    #[error("the amount is too large to add up")]
    AmountTooLarge,
    #[error("{0:?} is not an order number (YYYYMMDD-NNNNNN)")]
    InvalidOrderNo(String),
    #[error("the order is {status}; only orders the shop has not accepted can be cancelled")]
    NotCancellable { status: OrderStatus },
    #[error("the stored order {order_no} is not one the rules could make: {what}")]
    Corrupt { order_no: String, what: String },
    #[error("an order that is {status} cannot be {action}")]
    Conflict {
        status: OrderStatus,
        action: &'static str,
    },
}
