//! The node's wall clock: the Unix time at a point of the monotonic clock,
//! once something (SNTP, [`crate::netconf`]) has told it. Until then the
//! node knows only its uptime, and [`unix_ms`] is `None`.
//!
//! It is global, like the board handle, because checkpoints are written
//! deep inside the task table and log lines everywhere: every part reads
//! the same clock without being handed it.

use core::cell::Cell;

use critical_section::Mutex;

/// Unix milliseconds at monotonic time 0, once set.
static EPOCH_MS: Mutex<Cell<Option<i64>>> = Mutex::new(Cell::new(None));

/// Records that the Unix time was `unix_ms` at monotonic time `now_ns`.
pub fn set(now_ns: u64, unix_ms: u64) {
    let epoch = unix_ms as i64 - (now_ns / 1_000_000) as i64;
    critical_section::with(|cs| EPOCH_MS.borrow(cs).set(Some(epoch)));
}

/// The Unix time in milliseconds at monotonic time `now_ns`, if known.
pub fn unix_ms(now_ns: u64) -> Option<u64> {
    at(
        critical_section::with(|cs| EPOCH_MS.borrow(cs).get())?,
        now_ns,
    )
}

/// The Unix time at `now_ns` for a clock whose monotonic 0 was `epoch_ms`.
fn at(epoch_ms: i64, now_ns: u64) -> Option<u64> {
    u64::try_from(epoch_ms + (now_ns / 1_000_000) as i64).ok()
}

/// The Unix time in milliseconds now (on the installed board's clock), or 0
/// when the node has not learnt it (the checkpoint format's "unknown").
pub fn now_unix_ms() -> u64 {
    unix_ms(crate::uptime_ns()).unwrap_or(0)
}

/// A Unix time in milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn format_utc(unix_ms: u64) -> alloc::string::String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    alloc::format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_format_as_iso_8601() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_utc(1_798_761_599_999), "2026-12-31T23:59:59.999Z");
        assert_eq!(format_utc(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
    }

    #[test]
    fn the_clock_follows_the_monotonic_time() {
        // Set at 5 s of uptime to 1_700_000_000_000 ms.
        let epoch = 1_700_000_000_000 - 5_000;
        assert_eq!(at(epoch, 5_000_000_000), Some(1_700_000_000_000));
        assert_eq!(at(epoch, 6_500_000_000), Some(1_700_000_001_500));
        assert_eq!(at(-10, 0), None);
    }
}
