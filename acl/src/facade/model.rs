//! What the façade answers, in the new language: shops with their hours and
//! whether they are open now, menus with prices and availability, a
//! member's delivery address, and orders as snapshots for rebuilds. No
//! `tb_` name, status code or `'HHMM'` string gets past this module's
//! constructors.

use contracts::Won;
use serde::Serialize;
use time::{OffsetDateTime, UtcOffset};

/// Baedal keeps hours in Korean time (UTC+9, no daylight saving).
pub const KOREAN_TIME: UtcOffset = match UtcOffset::from_hms(9, 0, 0) {
    Ok(offset) => offset,
    Err(_) => UtcOffset::UTC,
};

/// A shop's category (`tb_shop.ctgr_cd` translated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Korean,
    Chicken,
    Pizza,
    Chinese,
    Japanese,
    /// 분식: snacks (tteokbokki, gimbap).
    Snacks,
    Cafe,
    /// A code added to the legacy list after this translation was written.
    Other,
}

impl Category {
    pub fn from_legacy_code(code: &str) -> Self {
        match code {
            "KOREAN" => Self::Korean,
            "CHICKEN" => Self::Chicken,
            "PIZZA" => Self::Pizza,
            "CHINESE" => Self::Chinese,
            "JAPANESE" => Self::Japanese,
            "BUNSIK" => Self::Snacks,
            "CAFE" => Self::Cafe,
            _ => Self::Other,
        }
    }
}

/// Minutes since midnight, Korean time (`0..=1440`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Minute(u16);

impl Minute {
    /// `'HHMM'` as stored by Baedal; `2400` is the end of the day.
    pub fn from_legacy_hm(hm: &str) -> Option<Self> {
        if hm.len() != 4 || !hm.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let hours: u16 = hm[..2].parse().ok()?;
        let minutes: u16 = hm[2..].parse().ok()?;
        let valid = minutes < 60 && (hours < 24 || (hours == 24 && minutes == 0));
        valid.then_some(Self(hours * 60 + minutes))
    }

    pub fn of(at: OffsetDateTime) -> Self {
        let local = at.to_offset(KOREAN_TIME);
        Self(u16::from(local.hour()) * 60 + u16::from(local.minute()))
    }

    /// `HH:MM`.
    pub fn display(self) -> String {
        format!("{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// When a shop takes orders, in Korean time. Baedal's rules: closing
/// before opening crosses midnight; `00:00`–`24:00` is always open; equal
/// times mean closed all day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpeningHours {
    pub opens: Minute,
    pub closes: Minute,
}

impl OpeningHours {
    pub fn is_open_at(&self, at: OffsetDateTime) -> bool {
        let now = Minute::of(at);
        match self.opens.cmp(&self.closes) {
            std::cmp::Ordering::Less => self.opens <= now && now < self.closes,
            std::cmp::Ordering::Greater => now >= self.opens || now < self.closes,
            std::cmp::Ordering::Equal => false,
        }
    }
}

/// A shop as the legacy system holds it; [`Shop::at`] adds what depends
/// on the time of asking, so a cached shop is never "open" by mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shop {
    pub shop_id: i64,
    pub name: String,
    pub category: Category,
    pub hours: OpeningHours,
    pub minimum_order_amount: Won,
    pub phone: String,
}

/// A shop as the façade shows it at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShopView {
    pub shop_id: i64,
    pub name: String,
    pub category: Category,
    pub opening_hours: HoursView,
    /// Whether the shop takes orders at the moment of the answer.
    pub open_now: bool,
    pub minimum_order_amount: Won,
    pub phone: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HoursView {
    /// `HH:MM`.
    pub opens_at: String,
    /// `HH:MM`; before `opens_at` when the hours cross midnight.
    pub closes_at: String,
    pub time_zone: &'static str,
}

impl Shop {
    pub fn at(&self, now: OffsetDateTime) -> ShopView {
        ShopView {
            shop_id: self.shop_id,
            name: self.name.clone(),
            category: self.category,
            opening_hours: HoursView {
                opens_at: self.hours.opens.display(),
                closes_at: self.hours.closes.display(),
                time_zone: "Asia/Seoul",
            },
            open_now: self.hours.is_open_at(now),
            minimum_order_amount: self.minimum_order_amount,
            phone: self.phone.clone(),
        }
    }
}

/// One item of a shop's menu.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MenuItem {
    pub menu_id: i64,
    pub name: String,
    pub price: Won,
    /// Whether it can be ordered (`tb_menu.sale_yn`).
    pub available: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Menu {
    pub shop_id: i64,
    pub items: Vec<MenuItem>,
}

/// What ordering needs of a member: where to deliver by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub member_id: i64,
    pub delivery_address: String,
}

/// Orders as snapshots, for read-model rebuilds (full and partial imports):
/// the published shape of every export, shared with reconciliation's
/// stores and `legacy.order.resynced.v1`, so it lives in `contracts`.
pub use contracts::legacy::{DeliverySnapshot, OrderPage, OrderSnapshot, PaymentSnapshot};

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn hours(opens: &str, closes: &str) -> OpeningHours {
        OpeningHours {
            opens: Minute::from_legacy_hm(opens).expect("hours"),
            closes: Minute::from_legacy_hm(closes).expect("hours"),
        }
    }

    #[test]
    fn open_now_is_judged_in_korean_time() {
        let day = hours("1000", "2200");
        // 00:59 UTC is 09:59 in Seoul; 01:00 UTC is 10:00.
        assert!(!day.is_open_at(datetime!(2026-11-30 00:59 UTC)));
        assert!(day.is_open_at(datetime!(2026-11-30 01:00 UTC)));
        assert!(day.is_open_at(datetime!(2026-11-30 12:59 UTC)));
        assert!(!day.is_open_at(datetime!(2026-11-30 13:00 UTC)));
    }

    #[test]
    fn hours_across_midnight_always_open_and_closed_all_day() {
        let night = hours("1700", "0300");
        assert!(night.is_open_at(datetime!(2026-11-30 23:00 +09:00)));
        assert!(night.is_open_at(datetime!(2026-11-30 02:59 +09:00)));
        assert!(!night.is_open_at(datetime!(2026-11-30 03:00 +09:00)));
        assert!(!night.is_open_at(datetime!(2026-11-30 12:00 +09:00)));
        let always = hours("0000", "2400");
        assert!(always.is_open_at(datetime!(2026-11-30 23:59 +09:00)));
        assert!(always.is_open_at(datetime!(2026-11-30 00:00 +09:00)));
        let never = hours("0000", "0000");
        assert!(!never.is_open_at(datetime!(2026-11-30 12:00 +09:00)));
    }

    #[test]
    fn malformed_legacy_hours_are_refused() {
        for bad in ["", "930", "2401", "1260", "ab00", "24:0"] {
            assert_eq!(Minute::from_legacy_hm(bad), None, "{bad}");
        }
        assert_eq!(
            Minute::from_legacy_hm("2400").map(Minute::display),
            Some("24:00".to_owned())
        );
    }

    #[test]
    fn a_shop_view_names_the_category_and_shows_hours_as_clock_times() {
        let shop = Shop {
            shop_id: 17,
            name: "분식왕".into(),
            category: Category::from_legacy_code("BUNSIK"),
            hours: hours("1100", "2100"),
            minimum_order_amount: 9_000,
            phone: "02-555-0017".into(),
        };
        let view = serde_json::to_value(shop.at(datetime!(2026-11-30 12:00 +09:00))).expect("JSON");
        assert_eq!(
            view,
            serde_json::json!({
                "shop_id": 17, "name": "분식왕", "category": "snacks",
                "opening_hours": {"opens_at": "11:00", "closes_at": "21:00", "time_zone": "Asia/Seoul"},
                "open_now": true, "minimum_order_amount": 9000, "phone": "02-555-0017"
            })
        );
    }
}
