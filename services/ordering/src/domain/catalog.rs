//! What ordering needs to know of the catalog to take an order: a shop's
//! hours, minimum and whether it takes orders, and its menu items' prices.
//! The catalog is another context (Baedal's until stage 4); the ACL's
//! façade answers these and an adapter turns the answers into these values.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::values::Won;

/// Minutes since midnight, Korean time: when a shop opens or closes, and
/// the moment an order is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MinuteOfDay(u16);

impl MinuteOfDay {
    /// `hours:minutes`, from 00:00 to 24:00 (the end of the day).
    pub fn new(hours: u16, minutes: u16) -> Option<Self> {
        (minutes < 60 && (hours < 24 || (hours == 24 && minutes == 0)))
            .then_some(Self(hours * 60 + minutes))
    }

    /// The time of day in Korea (UTC+9, no daylight saving) at `at`: shop
    /// hours are Korean time.
    pub fn in_korea(at: time::OffsetDateTime) -> Self {
        let korean =
            at.to_offset(time::UtcOffset::from_hms(9, 0, 0).unwrap_or(time::UtcOffset::UTC));
        Self(u16::from(korean.hour()) * 60 + u16::from(korean.minute()))
    }

    /// Baedal's `'HHMM'`.
    pub fn parse_hhmm(text: &str) -> Option<Self> {
        if text.len() != 4 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Self::new(text[..2].parse().ok()?, text[2..].parse().ok()?)
    }
}

impl fmt::Display for MinuteOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// When a shop takes orders. Closing before opening means the hours cross
/// midnight; equal times mean closed all day (Baedal's rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpeningHours {
    pub open: MinuteOfDay,
    pub close: MinuteOfDay,
}

impl OpeningHours {
    pub fn is_open_at(&self, now: MinuteOfDay) -> bool {
        match self.open.cmp(&self.close) {
            std::cmp::Ordering::Less => self.open <= now && now < self.close,
            std::cmp::Ordering::Greater => now >= self.open || now < self.close,
            std::cmp::Ordering::Equal => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shop {
    pub shop_id: i64,
    pub name: String,
    pub hours: OpeningHours,
    /// The smallest total the shop delivers.
    pub minimum: Won,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MenuItem {
    pub menu_id: i64,
    pub shop_id: i64,
    pub name: String,
    pub price: Won,
    pub on_sale: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hhmm: &str) -> MinuteOfDay {
        MinuteOfDay::parse_hhmm(hhmm).expect("a time")
    }

    fn hours(open: &str, close: &str) -> OpeningHours {
        OpeningHours {
            open: at(open),
            close: at(close),
        }
    }

    #[test]
    fn hours_within_a_day_include_the_opening_minute_and_not_the_closing_one() {
        let day = hours("1100", "2200");
        assert!(!day.is_open_at(at("1059")));
        assert!(day.is_open_at(at("1100")));
        assert!(day.is_open_at(at("2159")));
        assert!(!day.is_open_at(at("2200")));
    }

    #[test]
    fn hours_across_midnight_and_closed_all_day() {
        let night = hours("1700", "0300");
        assert!(night.is_open_at(at("2330")));
        assert!(night.is_open_at(at("0000")));
        assert!(!night.is_open_at(at("0300")));
        assert!(!night.is_open_at(at("1200")));
        assert!(!hours("0900", "0900").is_open_at(at("0900")));
        assert!(hours("0000", "2400").is_open_at(at("2359")));
    }

    #[test]
    fn the_time_of_day_is_korean() {
        // 02:30 UTC is 11:30 in Seoul; 15:10 UTC is 00:10 the next day.
        assert_eq!(
            MinuteOfDay::in_korea(time::macros::datetime!(2026-11-30 02:30 UTC)),
            at("1130")
        );
        assert_eq!(
            MinuteOfDay::in_korea(time::macros::datetime!(2026-11-30 15:10 UTC)),
            at("0010")
        );
    }

    #[test]
    fn times_are_hhmm_up_to_the_end_of_the_day() {
        assert_eq!(at("0930").to_string(), "09:30");
        assert_eq!(at("2400").to_string(), "24:00");
        for bad in ["2401", "2500", "0960", "930", "09:30", "abcd", ""] {
            assert_eq!(MinuteOfDay::parse_hhmm(bad), None, "{bad}");
        }
    }
}
