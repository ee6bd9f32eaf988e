//! HTTP dates (RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
//!
//! Converts between Unix seconds and the three formats HTTP allows, without a
//! date crate. Reading accepts IMF-fixdate, RFC 850 and asctime; writing always
//! produces IMF-fixdate. Times before 1970 are not representable and read as
//! `None`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Seconds since the epoch, 0 for times before it.
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Formats as IMF-fixdate.
pub fn format(t: SystemTime) -> String {
    format_unix(unix_seconds(t))
}

pub fn format_unix(secs: u64) -> String {
    let mut out = Vec::with_capacity(29);
    write_unix(&mut out, secs);
    String::from_utf8(out).unwrap_or_default()
}

/// Unix seconds written as IMF-fixdate by a head field (see `write_unix`).
#[derive(Clone, Copy, Debug)]
pub struct Imf(pub u64);

/// Appends the IMF-fixdate of `secs` (no allocation: heads carry one per
/// answer).
pub fn write_unix(out: &mut Vec<u8>, secs: u64) {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let two = |out: &mut Vec<u8>, n: u64| {
        out.extend_from_slice(&[b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8]);
    };
    out.extend_from_slice(DAYS[(days % 7) as usize].as_bytes());
    out.extend_from_slice(b", ");
    two(out, d);
    out.push(b' ');
    out.extend_from_slice(MONTHS[(m - 1) as usize].as_bytes());
    out.push(b' ');
    // From 1970 on: four digits or more, never padded.
    super::push_decimal(out, y);
    out.push(b' ');
    two(out, rem / 3600);
    out.push(b':');
    two(out, rem / 60 % 60);
    out.push(b':');
    two(out, rem % 60);
    out.extend_from_slice(b" GMT");
}

/// Parses any of the three HTTP date formats.
pub fn parse(s: &str) -> Option<SystemTime> {
    parse_unix(s).map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
}

pub fn parse_unix(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.len() > 64 {
        return None;
    }
    let parts: Vec<&str> = s.split_ascii_whitespace().collect();
    let (day, month, year, time) = match parts.as_slice() {
        // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        [_, d, m, y, t, "GMT"] => (*d, *m, parse_num(y)?, *t),
        // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
        [_, dmy, t, "GMT"] => {
            let mut it = dmy.split('-');
            let (d, m, y) = (it.next()?, it.next()?, parse_num(it.next()?)?);
            if it.next().is_some() {
                return None;
            }
            let y = if y < 70 {
                2000 + y
            } else if y < 100 {
                1900 + y
            } else {
                y
            };
            (d, m, y, *t)
        }
        // asctime: Sun Nov  6 08:49:37 1994
        [_, m, d, t, y] => (*d, *m, parse_num(y)?, *t),
        _ => return None,
    };
    let day = parse_num(day)?;
    let month = MONTHS.iter().position(|&name| name == month)? as u64 + 1;
    let mut hms = time.split(':');
    let (h, mi, se) = (
        parse_num(hms.next()?)?,
        parse_num(hms.next()?)?,
        parse_num(hms.next()?)?,
    );
    if hms.next().is_some() || !(1..=31).contains(&day) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    if !(1970..=9999).contains(&year) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}

fn parse_num(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

// Howard Hinnant's civil calendar algorithms, for days since 1970-01-01.
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(format_unix(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(format_unix(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(format_unix(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(format_unix(4_102_444_800), "Fri, 01 Jan 2100 00:00:00 GMT");
        // Past year 9999 the year just gets longer.
        assert_eq!(
            format_unix(253_402_300_800),
            "Sat, 01 Jan 10000 00:00:00 GMT"
        );
    }

    #[test]
    fn three_formats_parse_alike() {
        for s in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_unix(s), Some(784_111_777), "{s}");
        }
    }

    #[test]
    fn round_trip_over_many_days() {
        let mut t = 0u64;
        while t < 8_000_000_000 {
            assert_eq!(parse_unix(&format_unix(t)), Some(t));
            t += 86_399 * 37 + 11;
        }
    }

    #[test]
    fn garbage_is_none() {
        for s in [
            "",
            "yesterday",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1969 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Nov 1994 08:49:37:1 GMT",
            "Sun, 06 Nov 99999 08:49:37 GMT",
        ] {
            assert_eq!(parse_unix(s), None, "{s}");
        }
    }
}
