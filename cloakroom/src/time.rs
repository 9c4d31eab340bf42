//! Millisecond timestamps in the two text forms express uses: ISO-8601 for the stored
//! `cookie.expires` (`Date.prototype.toISOString`) and IMF-fixdate for the `Expires` attribute
//! (`Date.prototype.toUTCString`).
//!
//! JavaScript dates are milliseconds since the Unix epoch, so that is the unit here too: the stored
//! value and the cookie attribute come from the same number, and `originalMaxAge` stays exact.
//!
//! Written by hand: express reads and writes any JavaScript date (±275,760 years), and a stored
//! record must come back byte for byte, while `httpdate` covers 1970 to 9999 only (test
//! `httpdate_agrees_where_it_reaches`); no crate in the dependency tree writes the ISO form.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A duration in whole milliseconds, as a signed number to add to a [`Timestamp`] (saturating:
/// no duration a session can have comes near the limit).
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// An instant, in whole milliseconds since the Unix epoch (as a JavaScript `Date`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// The largest magnitude a JavaScript `Date` can hold: ±100,000,000 days from the epoch.
const JS_DATE_LIMIT_MS: i64 = 8_640_000_000_000_000;
const MS_PER_DAY: i64 = 86_400_000;

impl Timestamp {
    /// The epoch, `Thu, 01 Jan 1970 00:00:00 GMT`: the `Expires` of a cookie being deleted.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// The current time.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// Milliseconds since the epoch, clamped to the range of a JavaScript `Date`.
    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms.clamp(-JS_DATE_LIMIT_MS, JS_DATE_LIMIT_MS))
    }

    /// Milliseconds since the epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// Converts from `SystemTime`, truncating to milliseconds.
    pub fn from_system_time(time: SystemTime) -> Self {
        let ms = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
            Err(before) => i64::try_from(before.duration().as_millis())
                .map(|ms| -ms)
                .unwrap_or(i64::MIN),
        };
        Self::from_millis(ms)
    }

    /// Converts to `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        let magnitude = Duration::from_millis(self.0.unsigned_abs());
        if self.0 >= 0 {
            UNIX_EPOCH + magnitude
        } else {
            UNIX_EPOCH - magnitude
        }
    }

    /// This instant moved by `ms` milliseconds (negative moves back), clamped.
    pub fn add_millis(self, ms: i64) -> Self {
        Self::from_millis(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self` (negative when `self` is before `earlier`).
    pub fn millis_since(self, earlier: Timestamp) -> i64 {
        self.0 - earlier.0
    }

    /// `2026-11-22T09:36:51.973Z`, as `Date.prototype.toISOString` writes it (years outside
    /// 0000–9999 get JavaScript's six-digit signed form).
    pub fn to_iso8601(self) -> String {
        let mut out = String::with_capacity(24);
        let c = Civil::from_millis(self.0);
        // Writing to a String cannot fail.
        let _ = if (0..=9999).contains(&c.year) {
            fmt::write(&mut out, format_args!("{:04}", c.year))
        } else {
            let sign = if c.year < 0 { '-' } else { '+' };
            fmt::write(&mut out, format_args!("{sign}{:06}", c.year.unsigned_abs()))
        };
        let _ = fmt::write(
            &mut out,
            format_args!(
                "-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                c.month, c.day, c.hour, c.minute, c.second, c.millis
            ),
        );
        out
    }

    /// Parses the form [`to_iso8601`](Self::to_iso8601) writes. Fractions of any length are
    /// accepted and truncated to milliseconds; a missing fraction means `.000`. Only UTC (`Z`) is
    /// accepted, because that is all `toISOString` produces.
    pub fn parse_iso8601(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        let (year, rest) = match bytes.first()? {
            b'+' | b'-' => {
                let year = i64::from(digits(bytes.get(1..7)?)?);
                (if bytes[0] == b'-' { -year } else { year }, &bytes[7..])
            }
            _ => (i64::from(digits(bytes.get(..4)?)?), &bytes[4..]),
        };
        // -MM-DDTHH:MM:SS
        if rest.len() < 15
            || rest[0] != b'-'
            || rest[3] != b'-'
            || rest[6] != b'T'
            || rest[9] != b':'
            || rest[12] != b':'
        {
            return None;
        }
        let month = digits(&rest[1..3])?;
        let day = digits(&rest[4..6])?;
        let hour = digits(&rest[7..9])?;
        let minute = digits(&rest[10..12])?;
        let second = digits(&rest[13..15])?;
        let mut rest = &rest[15..];
        let mut millis = 0;
        if let Some(fraction) = rest.strip_prefix(b".") {
            let len = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
            if len == 0 {
                return None;
            }
            for (i, digit) in fraction[..len.min(3)].iter().enumerate() {
                millis += u32::from(digit - b'0') * [100, 10, 1][i];
            }
            rest = &fraction[len..];
        }
        if rest != b"Z"
            || !(1..=12).contains(&month)
            || day == 0
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        let days = days_from_civil(year, month, day);
        let ms = days.checked_mul(MS_PER_DAY)?.checked_add(i64::from(
            hour * 3_600_000 + minute * 60_000 + second * 1000 + millis,
        ))?;
        (-JS_DATE_LIMIT_MS..=JS_DATE_LIMIT_MS)
            .contains(&ms)
            .then_some(Timestamp(ms))
    }

    /// `Thu, 01 Jan 1970 00:00:00 GMT`, as `Date.prototype.toUTCString` writes it: the form of
    /// the `Expires` cookie attribute. Milliseconds are dropped, not rounded.
    pub fn to_http_date(self) -> String {
        const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let c = Civil::from_millis(self.0);
        let weekday = WEEKDAYS[(self.0.div_euclid(MS_PER_DAY) + 4).rem_euclid(7) as usize];
        let year = if c.year < 0 {
            format!("-{:06}", c.year.unsigned_abs())
        } else {
            format!("{:04}", c.year)
        };
        format!(
            "{weekday}, {:02} {} {year} {:02}:{:02}:{:02} GMT",
            c.day,
            MONTHS[c.month as usize - 1],
            c.hour,
            c.minute,
            c.second
        )
    }
}

/// A broken-down UTC time.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    millis: u32,
}

impl Civil {
    fn from_millis(ms: i64) -> Self {
        let days = ms.div_euclid(MS_PER_DAY);
        let in_day = ms.rem_euclid(MS_PER_DAY) as u32;
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month,
            day,
            hour: in_day / 3_600_000,
            minute: in_day / 60_000 % 60,
            second: in_day / 1000 % 60,
            millis: in_day % 1000,
        }
    }
}

fn digits(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0u32, |acc, b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's civil-calendar algorithms (proleptic Gregorian, any year).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = i64::from(if month > 2 { month - 3 } else { month + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_in_both_forms() {
        assert_eq!(
            Timestamp::EPOCH.to_http_date(),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
        assert_eq!(Timestamp::EPOCH.to_iso8601(), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn express_spec_example() {
        // docs/wire-formats.md: the same instant in its two forms.
        let t = Timestamp::parse_iso8601("2026-11-22T09:36:51.973Z").unwrap();
        assert_eq!(t.to_iso8601(), "2026-11-22T09:36:51.973Z");
        assert_eq!(t.to_http_date(), "Sun, 22 Nov 2026 09:36:51 GMT");
    }

    #[test]
    fn round_trips_across_calendar_edges() {
        for text in [
            "2000-02-29T23:59:59.999Z",
            "1900-03-01T00:00:00.000Z",
            "1969-12-31T23:59:59.999Z",
            "0000-01-01T00:00:00.000Z",
            "9999-12-31T23:59:59.999Z",
            "+275760-09-13T00:00:00.000Z",
            "-000001-12-31T00:00:00.000Z",
        ] {
            let t = Timestamp::parse_iso8601(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(t.to_iso8601(), text);
        }
    }

    #[test]
    fn every_day_of_four_centuries_round_trips() {
        for days in (-146_097 * 2)..(146_097 * 2) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn fractions_and_rejections() {
        let whole = Timestamp::parse_iso8601("2026-01-01T00:00:00Z").unwrap();
        let long = Timestamp::parse_iso8601("2026-01-01T00:00:00.123456Z").unwrap();
        assert_eq!(long.millis_since(whole), 123);
        for bad in [
            "",
            "2026-13-01T00:00:00.000Z",
            "2026-02-29T00:00:00.000Z",
            "2026-01-01T24:00:00.000Z",
            "2026-01-01T00:00:00.000",
            "2026-01-01T00:00:00.000+01:00",
            "2026-01-01 00:00:00.000Z",
            "2026-01-01T00:00:00.Z",
            "+999999-01-01T00:00:00.000Z",
            "२०२६-01-01T00:00:00.000Z",
        ] {
            assert_eq!(Timestamp::parse_iso8601(bad), None, "{bad}");
        }
    }

    #[test]
    fn clamps_to_the_javascript_range() {
        assert_eq!(
            Timestamp::from_millis(i64::MAX).as_millis(),
            JS_DATE_LIMIT_MS
        );
        assert_eq!(
            Timestamp::EPOCH.add_millis(i64::MIN).as_millis(),
            -JS_DATE_LIMIT_MS
        );
        let far = Timestamp::from_millis(JS_DATE_LIMIT_MS);
        assert_eq!(far.to_iso8601(), "+275760-09-13T00:00:00.000Z");
        assert_eq!(far.to_http_date(), "Sat, 13 Sep 275760 00:00:00 GMT");
    }

    /// Where `httpdate` reaches (1970 to 9999) it writes what this module writes; express's
    /// dates go further both ways (`clamps_to_the_javascript_range`), which it cannot.
    #[test]
    fn httpdate_agrees_where_it_reaches() {
        let last = days_from_civil(9999, 12, 31) * MS_PER_DAY;
        let mut ms = 0;
        while ms <= last {
            let t = Timestamp::from_millis(ms);
            assert_eq!(
                t.to_http_date(),
                httpdate::fmt_http_date(t.to_system_time()),
                "{ms}"
            );
            ms += 7_777_777_777; // about every 90 days, every weekday and month
        }
        assert_eq!(
            Timestamp::from_millis(-1000).to_http_date(),
            "Wed, 31 Dec 1969 23:59:59 GMT"
        );
    }

    #[test]
    fn system_time_round_trip() {
        let t = Timestamp::from_millis(1_763_804_211_973);
        assert_eq!(Timestamp::from_system_time(t.to_system_time()), t);
        let before = Timestamp::from_millis(-1500);
        assert_eq!(Timestamp::from_system_time(before.to_system_time()), before);
    }
}
