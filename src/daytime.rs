//! The daytime service's answer (RFC 867): the current time as one line of
//! text, the seeds' UDP time server (seed 5).
//!
//! RFC 867 leaves the format open and suggests "Weekday, Month Day, Year
//! Time-Zone"; we follow its example, in UTC, so the answer needs no time
//! zone database: `Tuesday, February 22, 1982 17:37:43-UTC` plus CRLF (the
//! line ending of text protocols on the network). The calendar arithmetic
//! is Howard Hinnant's `civil_from_days`, exact for every date here, so
//! the function is pure and tested on known instants.

use std::time::{SystemTime, UNIX_EPOCH};

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// The daytime line for `now`, CRLF included. A clock set before 1970
/// reads as the epoch rather than failing.
pub(crate) fn line(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let in_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let weekday = WEEKDAYS[((days + 4) % 7) as usize];
    format!(
        "{weekday}, {} {day}, {year} {:02}:{:02}:{:02}-UTC\r\n",
        MONTHS[(month - 1) as usize],
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

/// The daytime line for the present moment.
pub(crate) fn now_line() -> String {
    line(SystemTime::now())
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), proleptic
/// Gregorian calendar.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days end each 4/100/400-year
    // cycle ("era" = 400 years = 146,097 days).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // day of era
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year, from March
    let mp = (5 * doy + 2) / 153; // month, from March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> String {
        line(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn the_epoch() {
        assert_eq!(at(0), "Thursday, January 1, 1970 00:00:00-UTC\r\n");
    }

    #[test]
    fn the_rfcs_own_example_day() {
        // RFC 867's example moment, February 22, 1982 17:37:43 PST, is
        // 01:37:43 UTC on the 23rd (the RFC's weekday is off by one).
        assert_eq!(
            at(383_276_263),
            "Tuesday, February 23, 1982 01:37:43-UTC\r\n"
        );
    }

    #[test]
    fn leap_days_and_century_rules() {
        assert_eq!(
            at(951_782_400),
            "Tuesday, February 29, 2000 00:00:00-UTC\r\n"
        );
        assert_eq!(
            at(1_709_251_199),
            "Thursday, February 29, 2024 23:59:59-UTC\r\n"
        );
        assert_eq!(at(4_107_542_400), "Monday, March 1, 2100 00:00:00-UTC\r\n");
    }

    #[test]
    fn a_clock_before_1970_reads_as_the_epoch() {
        let before = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(line(before), at(0));
    }
}
