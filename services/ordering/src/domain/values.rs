//! The small values of the ordering language: money in whole won, the
//! public order number, a line's quantity.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::OrderError;

/// An amount of Korean won. The won has no minor unit, so an amount is a
/// whole number; arithmetic is checked, since an overflow would be a
/// wrong total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Won(i64);

impl TryFrom<i64> for Won {
    type Error = OrderError;
    fn try_from(amount: i64) -> Result<Self, OrderError> {
        Self::new(amount)
    }
}

impl From<Won> for i64 {
    fn from(won: Won) -> Self {
        won.0
    }
}

impl Won {
    pub const ZERO: Self = Self(0);

    /// An amount; never negative.
    pub fn new(amount: i64) -> Result<Self, OrderError> {
        if amount < 0 {
            return Err(OrderError::InvalidAmount(amount));
        }
        Ok(Self(amount))
    }

    pub fn amount(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: Self) -> Result<Self, OrderError> {
        self.0
            .checked_add(other.0)
            .map(Self)
            .ok_or(OrderError::AmountTooLarge)
    }

    pub fn times(self, quantity: Quantity) -> Result<Self, OrderError> {
        self.0
            .checked_mul(i64::from(quantity.get()))
            .map(Self)
            .ok_or(OrderError::AmountTooLarge)
    }
}

impl fmt::Display for Won {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} won", self.0)
    }
}

/// How many of one menu item: 1 to 99, as Baedal has always allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u8")]
pub struct Quantity(u8);

impl Quantity {
    pub const MAX: u8 = 99;

    pub fn new(quantity: i64) -> Result<Self, OrderError> {
        u8::try_from(quantity)
            .ok()
            .filter(|q| (1..=Self::MAX).contains(q))
            .map(Self)
            .ok_or(OrderError::InvalidQuantity {
                menu_id: None,
                quantity,
            })
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<i64> for Quantity {
    type Error = OrderError;
    fn try_from(quantity: i64) -> Result<Self, OrderError> {
        Self::new(quantity)
    }
}

impl From<Quantity> for u8 {
    fn from(quantity: Quantity) -> Self {
        quantity.0
    }
}

/// The public order number, `YYYYMMDD-NNNNNN`: the day in Korean time and
/// at least six digits of a sequence both sides share (Baedal's `sq_ord_no`,
/// reached through the ACL), so a number is unique whichever side placed
/// the order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrderNo(String);

impl OrderNo {
    pub fn parse(text: &str) -> Result<Self, OrderError> {
        let invalid = || OrderError::InvalidOrderNo(text.to_owned());
        let (day, sequence) = text.split_once('-').ok_or_else(invalid)?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if day.len() != 8
            || !digits(day)
            || sequence.len() < 6
            || sequence.len() > 11
            || !digits(sequence)
        {
            return Err(invalid());
        }
        let month: u8 = day[4..6].parse().map_err(|_| invalid())?;
        let date: u8 = day[6..8].parse().map_err(|_| invalid())?;
        if !(1..=12).contains(&month) || !(1..=31).contains(&date) {
            return Err(invalid());
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrderNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for OrderNo {
    type Error = OrderError;
    fn try_from(text: String) -> Result<Self, OrderError> {
        Self::parse(&text)
    }
}

impl From<OrderNo> for String {
    fn from(order_no: OrderNo) -> Self {
        order_no.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_whole_won_never_negative_and_never_overflows() {
        assert_eq!(Won::new(18_500).map(Won::amount), Ok(18_500));
        assert_eq!(Won::new(-1), Err(OrderError::InvalidAmount(-1)));
        let two = Quantity::new(2).expect("valid");
        assert_eq!(
            Won::new(18_500).expect("valid").times(two),
            Won::new(37_000)
        );
        assert_eq!(
            Won::new(i64::MAX)
                .expect("valid")
                .checked_add(Won::new(1).expect("valid")),
            Err(OrderError::AmountTooLarge)
        );
        assert_eq!(
            Won::new(i64::MAX / 2 + 1).expect("valid").times(two),
            Err(OrderError::AmountTooLarge)
        );
    }

    #[test]
    fn quantities_are_one_to_ninety_nine() {
        assert_eq!(Quantity::new(1).map(Quantity::get), Ok(1));
        assert_eq!(Quantity::new(99).map(Quantity::get), Ok(99));
        for bad in [0, 100, -1, 256, i64::MAX] {
            assert_eq!(
                Quantity::new(bad),
                Err(OrderError::InvalidQuantity {
                    menu_id: None,
                    quantity: bad
                }),
                "{bad}"
            );
        }
    }

    #[test]
    fn order_numbers_are_a_day_and_a_sequence() {
        for good in ["20261130-000001", "20261130-1234567"] {
            assert_eq!(
                OrderNo::parse(good).map(|n| n.to_string()),
                Ok(good.to_owned())
            );
        }
        for bad in [
            "",
            "20261130",
            "20261130-00001",
            "2026113-000001",
            "20261330-000001",
            "20261100-000001",
            "20261130-00000a",
            "20261130_000001",
            "20261130-000001-1",
            "２0261130-000001",
            "20261130-123456789012",
        ] {
            assert_eq!(
                OrderNo::parse(bad),
                Err(OrderError::InvalidOrderNo(bad.to_owned())),
                "{bad}"
            );
        }
    }
}
