//! Baedal runs in Korea: opening hours and order-number dates are Korean
//! time (UTC+9, no daylight saving), whatever the server's zone.

use time::{OffsetDateTime, UtcOffset};

pub const KST: UtcOffset = match UtcOffset::from_hms(9, 0, 0) {
    Ok(offset) => offset,
    Err(_) => UtcOffset::UTC,
};

/// Minutes since midnight, Korean time.
pub fn minutes_now() -> u16 {
    let now = OffsetDateTime::now_utc().to_offset(KST);
    u16::from(now.hour()) * 60 + u16::from(now.minute())
}

/// `'HHMM'` as minutes since midnight (`2400` is 1440).
pub fn parse_hm(hm: &str) -> Option<u16> {
    if hm.len() != 4 || !hm.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: u16 = hm[..2].parse().ok()?;
    let minutes: u16 = hm[2..].parse().ok()?;
    (minutes < 60 && (hours < 24 || (hours == 24 && minutes == 0))).then_some(hours * 60 + minutes)
}

/// Whether a shop with these hours is open at `now` (minutes since midnight).
/// Closing before opening means the hours cross midnight; equal times mean
/// closed all day.
pub fn is_open(open: u16, close: u16, now: u16) -> bool {
    match open.cmp(&close) {
        std::cmp::Ordering::Less => open <= now && now < close,
        std::cmp::Ordering::Greater => now >= open || now < close,
        std::cmp::Ordering::Equal => false,
    }
}

/// `'HHMM'` shown as `HH:MM`.
pub fn display_hm(hm: &str) -> String {
    match (hm.get(..2), hm.get(2..)) {
        (Some(h), Some(m)) => format!("{h}:{m}"),
        _ => hm.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_within_a_day() {
        let (open, close) = (parse_hm("1000").unwrap(), parse_hm("2200").unwrap());
        assert!(!is_open(open, close, 9 * 60 + 59));
        assert!(is_open(open, close, 10 * 60));
        assert!(is_open(open, close, 21 * 60 + 59));
        assert!(!is_open(open, close, 22 * 60));
    }

    #[test]
    fn hours_across_midnight() {
        let (open, close) = (parse_hm("1700").unwrap(), parse_hm("0300").unwrap());
        assert!(is_open(open, close, 23 * 60));
        assert!(is_open(open, close, 2 * 60 + 59));
        assert!(!is_open(open, close, 3 * 60));
        assert!(!is_open(open, close, 12 * 60));
    }

    #[test]
    fn always_open_and_closed_all_day() {
        let always = (parse_hm("0000").unwrap(), parse_hm("2400").unwrap());
        assert!((0..1440).all(|m| is_open(always.0, always.1, m)));
        let never = parse_hm("0000").unwrap();
        assert!((0..1440).all(|m| !is_open(never, never, m)));
    }

    #[test]
    fn malformed_hours_are_refused() {
        for bad in ["", "930", "2401", "1260", "ab00", "24:0"] {
            assert_eq!(parse_hm(bad), None, "{bad}");
        }
    }
}
