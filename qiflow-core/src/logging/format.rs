//! Building one log line: JSON escaping, field capping, timestamps.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// The most bytes of one field value kept in a line; the rest is cut at a UTF-8 boundary and a
/// marker says how much was cut.
pub const FIELD_CAP: usize = 8 * 1024;

/// A recorded field value.
#[derive(Debug, Clone)]
pub(crate) enum FieldValue {
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    Redacted,
}

/// Bytes that `json_escape` must look at: control characters, `"`, `\`, DEL, and `0xE2` (the
/// lead byte of U+2028 and U+2029).
static NEEDS_CARE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table[0x7f] = true;
    table[0xe2] = true;
    table
};

/// Appends `s` as a JSON string (with quotes). Control characters, DEL, U+2028 and U+2029 are
/// escaped, so a value can never end a line or carry a terminal escape sequence.
pub(crate) fn json_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    json_escape(buf, s);
    buf.push(b'"');
}

/// Appends the JSON escape of `s`, without quotes.
pub(crate) fn json_escape(buf: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !NEEDS_CARE[b as usize] {
            i += 1;
            continue;
        }
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0xe2 if bytes.get(i + 1) == Some(&0x80)
                && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9)) =>
            {
                buf.extend_from_slice(&bytes[start..i]);
                buf.extend_from_slice(if bytes[i + 2] == 0xa8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                });
                i += 3;
                start = i;
                continue;
            }
            0xe2 => {
                i += 1;
                continue;
            }
            _ => {
                buf.extend_from_slice(&bytes[start..i]);
                let _ = write!(ByteWriter(buf), "\\u{b:04x}");
                i += 1;
                start = i;
                continue;
            }
        };
        buf.extend_from_slice(&bytes[start..i]);
        buf.extend_from_slice(escape);
        i += 1;
        start = i;
    }
    buf.extend_from_slice(&bytes[start..]);
}

/// A `fmt::Write` that appends JSON-escaped text to a line, keeping at most [`FIELD_CAP`] bytes
/// of the unescaped text and counting the rest, so `Debug`/`Display` values are written into the
/// line without an intermediate `String`. Call [`finish`](Self::finish) to add the cut marker.
pub(crate) struct JsonCapped<'a> {
    buf: &'a mut Vec<u8>,
    kept: usize,
    cut: usize,
}

impl<'a> JsonCapped<'a> {
    pub(crate) fn new(buf: &'a mut Vec<u8>) -> Self {
        Self {
            buf,
            kept: 0,
            cut: 0,
        }
    }

    /// Appends the marker when something was cut.
    pub(crate) fn finish(self) {
        if self.cut > 0 {
            json_escape(self.buf, &cut_marker(self.cut));
        }
    }
}

impl std::fmt::Write for JsonCapped<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let (kept, cut) = cap(s, FIELD_CAP - self.kept);
        json_escape(self.buf, kept);
        self.kept += kept.len();
        self.cut += cut;
        Ok(())
    }
}

/// Appends `s` for human-readable output: control characters, U+2028/9 and quotes escaped.
pub(crate) fn text_str(buf: &mut Vec<u8>, s: &str, quote: bool) {
    if quote {
        buf.push(b'"');
    }
    for c in s.chars() {
        match c {
            '"' if quote => buf.extend_from_slice(b"\\\""),
            '\\' if quote => buf.extend_from_slice(b"\\\\"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(ByteWriter(buf), "{}", c.escape_default());
            }
            c => {
                let mut tmp = [0u8; 4];
                buf.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
            }
        }
    }
    if quote {
        buf.push(b'"');
    }
}

/// Cuts `s` to at most `cap` bytes at a UTF-8 boundary; returns the kept part and how many bytes
/// were cut.
pub(crate) fn cap(s: &str, cap: usize) -> (&str, usize) {
    if s.len() <= cap {
        return (s, 0);
    }
    let mut end = cap;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], s.len() - end)
}

/// The marker appended to a capped value.
pub(crate) fn cut_marker(cut: usize) -> String {
    format!("…[truncated {cut} bytes]")
}

/// Caps a string value in place, appending the marker.
pub(crate) fn cap_string(mut s: String) -> String {
    let (kept, cut) = cap(&s, FIELD_CAP);
    if cut > 0 {
        let len = kept.len();
        s.truncate(len);
        s.push_str(&cut_marker(cut));
    }
    s
}

/// Appends an RFC 3339 UTC timestamp with milliseconds (`2026-11-28T13:04:05.123Z`).
///
/// The date and time of day are formatted once per second per thread.
pub(crate) fn timestamp(buf: &mut Vec<u8>, at: SystemTime) {
    thread_local! {
        static CACHE: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    let (secs, millis) = match at.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_millis()),
        Err(e) => {
            let d = e.duration();
            let ms = d.as_millis() as i64;
            (-(ms + 999) / 1000, ((1000 - (ms % 1000)) % 1000) as u32)
        }
    };
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != secs {
            let text = time::OffsetDateTime::from_unix_timestamp(secs)
                .ok()
                .and_then(|t| {
                    t.format(time::macros::format_description!(
                        "[year]-[month]-[day]T[hour]:[minute]:[second]"
                    ))
                    .ok()
                })
                .unwrap_or_else(|| "1970-01-01T00:00:00".to_owned());
            *cache = (secs, text);
        }
        buf.extend_from_slice(cache.1.as_bytes());
    });
    // Digit by digit: `write!` with a width costs more than the rest of the timestamp.
    let digit = |d: u32| b'0' + (d % 10) as u8;
    let millis = millis.min(999);
    buf.extend_from_slice(&[
        b'.',
        digit(millis / 100),
        digit(millis / 10),
        digit(millis),
        b'Z',
    ]);
}

/// Appends a value as JSON.
pub(crate) fn json_value(buf: &mut Vec<u8>, value: &FieldValue) {
    match value {
        FieldValue::Str(s) => json_str(buf, s),
        FieldValue::I64(v) => buf.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes()),
        FieldValue::U64(v) => buf.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes()),
        FieldValue::F64(v) if v.is_finite() => json_f64(buf, *v),
        FieldValue::F64(v) => json_str(buf, &v.to_string()),
        FieldValue::Bool(v) => buf.extend_from_slice(if *v { b"true" } else { b"false" }),
        FieldValue::Redacted => json_str(buf, super::REDACTED),
    }
}

/// The largest number of thousandths [`json_f64`] writes with integer formatting: below 2^53, so
/// every such count is an exact `f64`, and small enough that ryu would not use an exponent.
const MAX_THOUSANDTHS: f64 = 1e15;

/// Appends a finite `f64` as ryu writes it (the shortest text that reads back as the same value),
/// with a fast path for values with at most three decimals, such as the access line's
/// `latency_ms`: those are written as integers with a decimal point, which gives the same text.
fn json_f64(buf: &mut Vec<u8>, v: f64) {
    let thousandths = (v * 1000.0).round();
    // Exact: the value is the double nearest `thousandths / 1000`, whose shortest decimal form
    // has at most three decimals (a shorter decimal would be another double: doubles this small
    // are closer together than 0.001, so no two such decimals share one).
    if thousandths.abs() < MAX_THOUSANDTHS && thousandths / 1000.0 == v && v.abs() >= 1e-3 {
        let n = thousandths.abs() as u64;
        if v.is_sign_negative() {
            buf.push(b'-');
        }
        buf.extend_from_slice(itoa::Buffer::new().format(n / 1000).as_bytes());
        buf.push(b'.');
        let frac = (n % 1000) as u16;
        if frac == 0 {
            buf.push(b'0');
        } else {
            let digits = [
                b'0' + (frac / 100) as u8,
                b'0' + (frac / 10 % 10) as u8,
                b'0' + (frac % 10) as u8,
            ];
            let len = if frac.is_multiple_of(100) {
                1
            } else if frac.is_multiple_of(10) {
                2
            } else {
                3
            };
            buf.extend_from_slice(&digits[..len]);
        }
        return;
    }
    buf.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
}

/// Appends a value for human-readable output.
pub(crate) fn text_value(buf: &mut Vec<u8>, value: &FieldValue) {
    match value {
        FieldValue::Str(s) => {
            let quote = s.is_empty() || s.contains([' ', '"', '=']);
            text_str(buf, s, quote);
        }
        FieldValue::Redacted => buf.extend_from_slice(super::REDACTED.as_bytes()),
        other => json_value(buf, other),
    }
}

/// `fmt::Write` over a byte buffer.
pub(crate) struct ByteWriter<'a>(pub(crate) &'a mut Vec<u8>);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn json(s: &str) -> String {
        let mut buf = Vec::new();
        json_str(&mut buf, s);
        String::from_utf8(buf).unwrap()
    }

    fn ryu(v: f64) -> String {
        ryu::Buffer::new().format_finite(v).to_owned()
    }

    fn fast(v: f64) -> String {
        let mut buf = Vec::new();
        json_f64(&mut buf, v);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn floats_are_written_as_ryu_writes_them() {
        let edges = [
            0.0,
            -0.0,
            0.001,
            -0.001,
            0.0005,
            0.0015,
            0.1,
            0.2,
            0.3,
            1.0,
            2.5,
            3.0,
            10.0,
            12.34,
            999.999,
            1000.0,
            0.038157,
            1e11 + 0.5,
            999_999_999_999.999,
            1e12,
            1e13 + 0.125,
            1e15,
            1e16,
            1.7e300,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
            123_456.789_5,
        ];
        for v in edges.into_iter().flat_map(|v| [v, -v]) {
            assert_eq!(fast(v), ryu(v), "{v:e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn thousandths_are_written_as_ryu_writes_them(k in -2_000_000_000_000_000i64..2_000_000_000_000_000) {
            let v = k as f64 / 1000.0;
            proptest::prop_assert_eq!(fast(v), ryu(v));
        }

        #[test]
        fn any_float_is_written_as_ryu_writes_it(bits in proptest::num::u64::ANY) {
            let v = f64::from_bits(bits);
            if v.is_finite() {
                proptest::prop_assert_eq!(fast(v), ryu(v));
            }
        }

        #[test]
        fn latencies_are_written_as_ryu_writes_them(micros in 0u64..100_000_000) {
            let v = micros as f64 / 1000.0;
            proptest::prop_assert_eq!(fast(v), ryu(v));
        }
    }

    #[test]
    fn capped_writer_escapes_and_caps_like_cap_string() {
        for s in [
            "plain".to_owned(),
            "quote \" nul\0 sep \u{2028} ✓ â€".to_owned(),
            "é".repeat(5000),
            "x".repeat(FIELD_CAP + 7),
        ] {
            let mut direct = Vec::new();
            let mut w = JsonCapped::new(&mut direct);
            // In pieces, as `fmt` hands them over.
            for piece in s.split_inclusive('é') {
                w.write_str(piece).unwrap();
            }
            w.finish();
            let mut expected = Vec::new();
            json_escape(&mut expected, &cap_string(s.clone()));
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }

    #[test]
    fn json_strings_round_trip_and_never_break_lines() {
        for s in [
            "plain",
            "quote \" and \\ backslash",
            "line\nbreak\r\nand\rreturn",
            "nul\0byte",
            "esc \x1b[31mred\x1b[0m and \x1b]0;title\x07",
            "sep \u{2028} and \u{2029}",
            "del \x7f",
            "emoji 🦀 and ünïcödé",
        ] {
            let out = json(s);
            assert!(
                !out.contains(['\n', '\r', '\0', '\x1b', '\u{2028}', '\u{2029}']),
                "{out}"
            );
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn capping_respects_utf8() {
        let s = "é".repeat(5000); // 10,000 bytes
        let (kept, cut) = cap(&s, FIELD_CAP);
        assert!(kept.len() <= FIELD_CAP);
        assert_eq!(kept.len() + cut, s.len());
        assert!(s.is_char_boundary(kept.len()));
        let capped = cap_string(s);
        assert!(
            capped.ends_with("…[truncated 1808 bytes]"),
            "{}",
            &capped[capped.len() - 40..]
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_millis() {
        let mut buf = Vec::new();
        timestamp(
            &mut buf,
            UNIX_EPOCH + Duration::from_millis(1_764_335_045_123),
        );
        assert_eq!(String::from_utf8(buf).unwrap(), "2025-11-28T13:04:05.123Z");
        let mut buf = Vec::new();
        timestamp(
            &mut buf,
            UNIX_EPOCH + Duration::from_millis(1_764_335_046_007),
        );
        assert_eq!(String::from_utf8(buf).unwrap(), "2025-11-28T13:04:06.007Z");
        // Every millisecond, including those past 255.
        for ms in 0..1000u64 {
            let mut buf = Vec::new();
            timestamp(
                &mut buf,
                UNIX_EPOCH + Duration::from_millis(1_764_335_046_000 + ms),
            );
            assert_eq!(
                String::from_utf8(buf).unwrap(),
                format!("2025-11-28T13:04:06.{ms:03}Z")
            );
        }
    }
}
