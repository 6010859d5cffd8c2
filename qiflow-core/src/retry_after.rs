//! The HTTP `Retry-After` header, shared by every sender that honours a 429 (alert channels,
//! Sentry).

use std::time::{Duration, SystemTime};

/// `Retry-After` as seconds (`"120"`, or `"2.5"`, rounded up) or an HTTP date (`"Wed, 21 Oct
/// 2015 07:28:00 GMT"`, counted from now; a past date is zero). A number too large for a
/// `Duration` is `Duration::MAX`: callers cap what they honour. `None` for anything else.
pub(crate) fn parse(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        if seconds.is_nan() || seconds < 0.0 {
            return None; // negative or NaN
        }
        return Some(Duration::try_from_secs_f64(seconds.ceil()).unwrap_or(Duration::MAX));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_dates_and_nonsense() {
        assert_eq!(parse("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse(" 2.5 "), Some(Duration::from_secs(3)));
        assert_eq!(parse("1e30"), Some(Duration::MAX));
        assert_eq!(parse("inf"), Some(Duration::MAX));
        assert_eq!(parse("-1"), None);
        assert_eq!(parse("NaN"), None);
        assert_eq!(parse("soon"), None);
        assert_eq!(parse("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let wait = parse(&later).unwrap();
        assert!((28..=30).contains(&wait.as_secs()), "{wait:?}");
    }
}
