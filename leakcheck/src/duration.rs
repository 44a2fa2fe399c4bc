//! The one duration syntax leakcheck reads (`LEAKCHECK_GRACE`, the
//! attribute's `grace = "…"`): a `const fn`, so the code
//! `#[leakcheck::test]` generates rejects a bad `grace` at compile time with
//! this same parser instead of a copy in the macro crate.

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Fraction digits beyond nanosecond precision for any unit are dropped.
const MAX_FRACTION_DIGITS: u32 = 12;

/// Parses `250ms`, `2s`, `1.5s`, `100us` (or `100µs`), `10ns`, `1m` or a bare
/// `0`; a space may separate the number from its unit. Returns `None` for
/// anything else, negative or out of range values included.
pub const fn parse_duration(value: &str) -> Option<Duration> {
    let bytes = value.as_bytes().trim_ascii();
    if let [b'0'] = bytes {
        return Some(Duration::ZERO);
    }
    let mut whole: u128 = 0;
    let mut fraction: u128 = 0;
    let mut fraction_digits: u32 = 0;
    let mut digits = 0;
    let mut seen_dot = false;
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'.' && !seen_dot {
            seen_dot = true;
        } else if byte.is_ascii_digit() {
            let digit = (byte - b'0') as u128;
            digits += 1;
            if !seen_dot {
                whole = match whole.checked_mul(10) {
                    Some(shifted) => match shifted.checked_add(digit) {
                        Some(next) => next,
                        None => return None,
                    },
                    None => return None,
                };
            } else if fraction_digits < MAX_FRACTION_DIGITS {
                fraction = fraction * 10 + digit;
                fraction_digits += 1;
            }
        } else {
            break;
        }
        i += 1;
    }
    if digits == 0 {
        return None;
    }
    let nanos_per_unit: u128 = match bytes.split_at(i).1.trim_ascii() {
        b"ns" => 1,
        b"us" | [0xC2, 0xB5, b's'] => 1_000,
        b"ms" => 1_000_000,
        b"s" => NANOS_PER_SEC,
        b"m" => 60 * NANOS_PER_SEC,
        _ => return None,
    };
    let fraction_nanos = fraction * nanos_per_unit / 10u128.pow(fraction_digits);
    let Some(nanos) = whole.checked_mul(nanos_per_unit) else {
        return None;
    };
    let Some(nanos) = nanos.checked_add(fraction_nanos) else {
        return None;
    };
    let secs = nanos / NANOS_PER_SEC;
    if secs > u64::MAX as u128 {
        return None;
    }
    Some(Duration::new(secs as u64, (nanos % NANOS_PER_SEC) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration(".5s"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("100us"), Some(Duration::from_micros(100)));
        assert_eq!(parse_duration("100µs"), Some(Duration::from_micros(100)));
        assert_eq!(parse_duration("10ns"), Some(Duration::from_nanos(10)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration(" 250 ms "), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("0.1ns"), Some(Duration::ZERO));
    }

    #[test]
    fn malformed_durations_are_rejected() {
        for bad in [
            "", "250", "fast", "-1s", "+1s", ".s", "1.2.3s", "1e3s", "1 h", "ms", "1sec",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn out_of_range_durations_are_rejected_not_wrapped() {
        assert_eq!(
            parse_duration("99999999999999999999999999999999999999999s"),
            None
        );
        assert_eq!(parse_duration("18446744073709551616s"), None);
        assert_eq!(
            parse_duration("18446744073709551615s"),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn parses_in_const_context() {
        const GRACE: Option<Duration> = parse_duration("1.25s");
        assert_eq!(GRACE, Some(Duration::from_millis(1250)));
    }
}
