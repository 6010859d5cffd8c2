//! Human-friendly durations (`"30s"`, `"5m"`, `"30d"`) and sizes (`"64KiB"`, `"100MiB"`).

use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;

/// Parses a duration such as `"250ms"`, `"30s"`, `"5m"`, `"1h 30m"` or `"30d"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("invalid duration {text:?} ({e}); write a number and a unit, like \"30s\", \"5m\" or \"30d\"")
    })
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Parses a size such as `"64KiB"`, `"100MiB"`, `"1GB"` or a plain number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| {
            format!(
                "invalid size {text:?}; write a number and a unit, like \"64KiB\" or \"100MiB\""
            )
        })
}

/// Formats a size in binary units (`"100 MiB"`).
pub fn format_size(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

/// Parses a Unix file mode written in octal, such as `"0640"` or `"640"` (an optional `0o` prefix
/// is accepted too).
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err(format!(
            "invalid file mode {text:?}; write it in octal, like \"0640\" or \"0600\""
        ));
    }
    u32::from_str_radix(digits, 8).map_err(|e| format!("invalid file mode {text:?} ({e})"))
}

/// Formats a file mode the way [`parse_mode`] reads it (`"0640"`).
pub fn format_mode(mode: u32) -> String {
    format!("{mode:04o}")
}

/// serde helpers for Unix file modes written as octal strings (`"0640"`).
pub(crate) mod mode {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(m: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_mode(*m))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = u32;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an octal file mode in a string, like \"0640\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
                parse_mode(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// serde helpers for `Duration` fields written as strings.
pub(crate) mod duration {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration string like \"30s\", \"5m\" or \"30d\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                parse_duration(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// serde helpers for `Option<Duration>` fields written as strings.
pub(crate) mod option_duration {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

/// serde helpers for sizes in bytes written as strings (or plain integers).
pub(crate) mod size {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(b: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_size(*b).replace(' ', ""))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = u64;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size like \"64KiB\" or \"100MiB\", or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
                parse_size(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
                Ok(v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
                u64::try_from(v).map_err(|_| E::custom("a size cannot be negative"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("30").unwrap_err().contains("\"30s\""));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn modes_parse_in_octal() {
        assert_eq!(parse_mode("0640").unwrap(), 0o640);
        assert_eq!(parse_mode("600").unwrap(), 0o600);
        assert_eq!(parse_mode("0o644").unwrap(), 0o644);
        assert_eq!(format_mode(0o640), "0640");
        for bad in ["", "0648", "rw-r-----", "12345", "-1", "0x1a4"] {
            assert!(parse_mode(bad).unwrap_err().contains("\"0640\""), "{bad}");
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64KiB").unwrap(), 64 * 1024);
        assert_eq!(parse_size("100MiB").unwrap(), 100 * 1024 * 1024);
        assert_eq!(parse_size("1kB").unwrap(), 1000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").unwrap_err().contains("100MiB"));
        assert_eq!(
            parse_size(&format_size(100 * 1024 * 1024).replace(' ', "")).unwrap(),
            100 * 1024 * 1024
        );
    }
}
