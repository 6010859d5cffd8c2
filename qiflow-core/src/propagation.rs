//! W3C trace context: the `traceparent` and `tracestate` headers that tie one request to the
//! calls it makes and to the call that made it.
//!
//! The middleware reads an incoming `traceparent` (policy `[tracing] propagation`, default
//! `"w3c"`): the request continues that trace, as a child of the caller's span. Without one, or
//! with a malformed one (ignored and counted on
//! `qiflow_trace_context_invalid_total{header}`, never an error), the request starts a new trace.
//! Either way every request has a trace id and a span id of its own, which appear on its log
//! lines, its access line, its error reports (and Sentry's trace context), its audit records and
//! the alerts raised from it. With `[tracing] respond = true` the response carries the request's
//! `traceparent` too.
//!
//! For the calls a handler makes, [`inject`] writes the current request's context into the
//! outgoing headers, so the next service continues the same trace:
//!
//! ```
//! use std::collections::HashMap;
//!
//! // Outside a request there is no context: nothing is written.
//! let mut headers: HashMap<String, String> = HashMap::new();
//! assert!(!qiflow_core::propagation::inject(&mut headers));
//! assert!(headers.is_empty());
//! ```
//!
//! `qiflow_tower::inject` does the same for an `http::HeaderMap`, and with the `reqwest`
//! feature [`inject`] takes a `reqwest::header::HeaderMap` (see `docs/tracing.md`).

use std::fmt;

use metrics::Counter;

use crate::config::{Findings, Propagation, TracingConfig};

/// The `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header name.
pub const TRACESTATE: &str = "tracestate";
/// The longest `tracestate` that is carried on (W3C: at least 512 characters must be
/// propagated); longer ones are dropped and counted.
pub const MAX_TRACESTATE_LEN: usize = 512;
/// The most list members a `tracestate` may have (W3C).
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// A 16-byte trace id, shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId([u8; 16]);

/// An 8-byte span id, shown as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId([u8; 8]);

impl TraceId {
    /// The id from its bytes (`None` for the invalid all-zero id).
    pub fn from_bytes(bytes: [u8; 16]) -> Option<Self> {
        (bytes != [0; 16]).then_some(Self(bytes))
    }

    /// The id's bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// The id from 32 lowercase hex digits (`None` when malformed or all zero).
    pub fn from_hex(hex: &str) -> Option<Self> {
        let mut bytes = [0; 16];
        decode_lower_hex(hex, &mut bytes)?;
        Self::from_bytes(bytes)
    }

    /// A new random id.
    pub(crate) fn random() -> Self {
        loop {
            if let Some(id) = Self::from_bytes(fastrand::u128(..).to_be_bytes()) {
                return id;
            }
        }
    }
}

impl SpanId {
    /// The id from its bytes (`None` for the invalid all-zero id).
    pub fn from_bytes(bytes: [u8; 8]) -> Option<Self> {
        (bytes != [0; 8]).then_some(Self(bytes))
    }

    /// The id's bytes.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0
    }

    /// The id from 16 lowercase hex digits (`None` when malformed or all zero).
    pub fn from_hex(hex: &str) -> Option<Self> {
        let mut bytes = [0; 8];
        decode_lower_hex(hex, &mut bytes)?;
        Self::from_bytes(bytes)
    }

    /// A new random id.
    pub(crate) fn random() -> Self {
        loop {
            if let Some(id) = Self::from_bytes(fastrand::u64(..).to_be_bytes()) {
                return id;
            }
        }
    }
}

fn decode_lower_hex(hex: &str, out: &mut [u8]) -> Option<()> {
    let digits = hex.as_bytes();
    if digits.len() != out.len() * 2 {
        return None;
    }
    let value = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (value(pair[0])? << 4) | value(pair[1])?;
    }
    Some(())
}

/// Writes `bytes` (16 at most: a trace id) as lowercase hex, in one write.
pub(crate) fn write_hex(out: &mut impl fmt::Write, bytes: &[u8]) -> fmt::Result {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 32];
    let digits = digits.get_mut(..bytes.len() * 2).ok_or(fmt::Error)?;
    for (pair, byte) in digits.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    out.write_str(std::str::from_utf8(digits).map_err(|_| fmt::Error)?)
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// The trace context of one request: its trace, its own span, the caller's span (when the
/// request continued an incoming `traceparent`) and whether the trace is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: TraceId,
    span_id: SpanId,
    parent_span_id: Option<SpanId>,
    sampled: bool,
}

impl TraceContext {
    /// The trace this request belongs to.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The request's own span.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The caller's span, when the request continued an incoming `traceparent`.
    pub fn parent_span_id(&self) -> Option<SpanId> {
        self.parent_span_id
    }

    /// Whether the trace is sampled (the `sampled` flag written downstream).
    pub fn is_sampled(&self) -> bool {
        self.sampled
    }

    /// The `traceparent` value that names this request's span as the parent:
    /// `00-<trace id>-<span id>-<flags>`.
    ///
    /// ```
    /// use qiflow_core::propagation::{Parent, TraceContext};
    ///
    /// let parent = Parent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    /// let context = TraceContext::child_of(&parent);
    /// let header = context.traceparent();
    /// assert!(header.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    /// assert!(header.ends_with("-01"));
    /// assert_ne!(&header[36..52], "00f067aa0ba902b7");
    /// ```
    pub fn traceparent(&self) -> String {
        let mut out = String::with_capacity(55);
        out.push_str("00-");
        // Writing to a `String` cannot fail.
        let _ = write_hex(&mut out, &self.trace_id.0);
        out.push('-');
        let _ = write_hex(&mut out, &self.span_id.0);
        out.push_str(if self.sampled { "-01" } else { "-00" });
        out
    }

    /// A new span in the caller's trace, sampled as the caller decided.
    pub fn child_of(parent: &Parent) -> Self {
        Self {
            trace_id: parent.trace_id,
            span_id: SpanId::random(),
            parent_span_id: Some(parent.span_id),
            sampled: parent.sampled,
        }
    }

    /// The first span of a new trace, sampled when its trace id falls within `ratio` (0.0 to
    /// 1.0), the decision OpenTelemetry's trace-id-ratio sampler makes, so every service with
    /// the same ratio decides alike for the same trace.
    pub fn root(ratio: f64) -> Self {
        let trace_id = TraceId::random();
        Self {
            trace_id,
            span_id: SpanId::random(),
            parent_span_id: None,
            sampled: ratio_samples(ratio, trace_id),
        }
    }
}

/// Whether `ratio` samples `trace_id`: the id's last 8 bytes (as an integer, shifted to 63 bits)
/// below `ratio × 2^63`.
pub(crate) fn ratio_samples(ratio: f64, trace_id: TraceId) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio.is_nan() || ratio <= 0.0 {
        return false;
    }
    let mut low = [0; 8];
    low.copy_from_slice(&trace_id.0[8..]);
    let value = u64::from_be_bytes(low) >> 1;
    // Exact below 2^53; the sampler's granularity does not need more.
    (value as f64) < ratio * (1u64 << 63) as f64
}

/// The caller's span, parsed from an incoming `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    trace_id: TraceId,
    span_id: SpanId,
    sampled: bool,
}

impl Parent {
    /// Parses a `traceparent` value by the W3C rules: `version-traceid-parentid-flags` in
    /// lowercase hex; version `ff` is invalid; version `00` is exactly 55 characters; a later
    /// version may carry more after a `-`, which is ignored; all-zero ids are invalid.
    ///
    /// ```
    /// use qiflow_core::propagation::Parent;
    ///
    /// let parent = Parent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    /// assert_eq!(parent.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    /// assert!(parent.is_sampled());
    /// assert!(Parent::parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_none());
    /// assert!(Parent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
    /// ```
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim_matches([' ', '\t']);
        let b = value.as_bytes();
        if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let mut version = [0u8; 1];
        decode_lower_hex(&value[0..2], &mut version)?;
        match version[0] {
            0xff => return None,
            0 if b.len() != 55 => return None,
            _ if b.len() > 55 && b[55] != b'-' => return None,
            _ => {}
        }
        let trace_id = TraceId::from_hex(&value[3..35])?;
        let span_id = SpanId::from_hex(&value[36..52])?;
        let mut flags = [0u8; 1];
        decode_lower_hex(&value[53..55], &mut flags)?;
        Some(Self {
            trace_id,
            span_id,
            sampled: flags[0] & 1 == 1,
        })
    }

    /// The caller's trace.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The caller's span.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// Whether the caller sampled the trace.
    pub fn is_sampled(&self) -> bool {
        self.sampled
    }
}

/// Whether a `tracestate` value may be carried on: at most [`MAX_TRACESTATE_LEN`] characters
/// of visible ASCII and spaces, at most 32 members, each `key=value` with a non-empty key.
///
/// ```
/// use qiflow_core::propagation::is_valid_tracestate;
///
/// assert!(is_valid_tracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"));
/// assert!(!is_valid_tracestate("no-equals-sign"));
/// ```
pub fn is_valid_tracestate(value: &str) -> bool {
    if value.len() > MAX_TRACESTATE_LEN || !value.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return false;
    }
    let mut members = 0;
    for member in value.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        members += 1;
        match member.split_once('=') {
            Some((key, _)) if !key.is_empty() && !key.contains(' ') => {}
            _ => return false,
        }
    }
    members <= MAX_TRACESTATE_MEMBERS
}

/// Where [`inject`] writes the trace context headers: a header map of some kind.
pub trait Injector {
    /// Sets the header `name` (lowercase) to `value`, replacing an earlier value.
    fn set(&mut self, name: &'static str, value: String);
}

impl Injector for std::collections::HashMap<String, String> {
    fn set(&mut self, name: &'static str, value: String) {
        self.insert(name.to_owned(), value);
    }
}

impl Injector for std::collections::BTreeMap<String, String> {
    fn set(&mut self, name: &'static str, value: String) {
        self.insert(name.to_owned(), value);
    }
}

impl Injector for Vec<(String, String)> {
    fn set(&mut self, name: &'static str, value: String) {
        self.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.push((name.to_owned(), value));
    }
}

/// `reqwest`'s header map (the `http` crate's `HeaderMap`).
#[cfg(feature = "reqwest")]
impl Injector for reqwest::header::HeaderMap {
    fn set(&mut self, name: &'static str, value: String) {
        // A traceparent is hex and dashes; a carried tracestate was checked to be visible ASCII.
        if let Ok(value) = reqwest::header::HeaderValue::try_from(value) {
            self.insert(name, value);
        }
    }
}

/// Writes the trace context of the request the caller is in (`traceparent`, and `tracestate`
/// when the request carried one) into `headers`, naming the request's span as the parent of the
/// call. Returns `false`, writing nothing, outside a request or with `[tracing] propagation =
/// "none"`.
pub fn inject(headers: &mut impl Injector) -> bool {
    let Some(request) = crate::scope::current().filter(|r| r.propagates()) else {
        return false;
    };
    headers.set(TRACEPARENT, request.trace().traceparent());
    if let Some(state) = request.tracestate() {
        headers.set(TRACESTATE, state.to_owned());
    }
    true
}

/// The trace context of the request the caller is in, when there is one.
pub fn current() -> Option<TraceContext> {
    Some(crate::scope::current()?.trace())
}

/// Adds the problems of `[tracing]` to `f`.
pub(crate) fn check(config: &TracingConfig, f: &mut Findings) {
    if let Some(endpoint) = config.otlp_endpoint.as_deref() {
        if !cfg!(feature = "otlp") {
            f.needs_feature("tracing.otlp_endpoint", "an OTLP export", "otlp");
        }
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            f.bad(
                "tracing.otlp_endpoint",
                format!(
                    "{endpoint:?} is not an http(s) URL; give the collector's traces URL, \
                     e.g. \"http://127.0.0.1:4318/v1/traces\""
                ),
            );
        }
    }
    if config.otlp_endpoint.is_none() && !config.headers.is_empty() {
        f.advise(
            "tracing.headers",
            "is set but tracing.otlp_endpoint is not, so no span is exported and the headers go \
             nowhere; set tracing.otlp_endpoint (e.g. \"http://127.0.0.1:4318/v1/traces\") or \
             remove tracing.headers",
        );
    }
    if config.timeout.is_zero() {
        f.bad(
            "tracing.timeout",
            "must be longer than zero; use e.g. \"10s\"",
        );
    }
    if !(0.0..=1.0).contains(&config.sample_ratio) {
        f.bad(
            "tracing.sample_ratio",
            format!(
                "{} is out of range; use 0.0 (sample no new trace) to 1.0 (every one)",
                config.sample_ratio
            ),
        );
    }
}

/// How requests take trace context (from `[tracing]`), and the counters of what was refused.
pub(crate) struct Propagator {
    read: bool,
    respond: bool,
    ratio: f64,
    invalid_traceparent: Counter,
    invalid_tracestate: Counter,
}

impl Propagator {
    /// `invalid_*` count the malformed headers ignored
    /// (`qiflow_trace_context_invalid_total{header}`).
    pub(crate) fn new(
        config: &TracingConfig,
        invalid_traceparent: Counter,
        invalid_tracestate: Counter,
    ) -> Self {
        Self {
            read: config.propagation == Propagation::W3c,
            respond: config.respond,
            ratio: config.sample_ratio,
            invalid_traceparent,
            invalid_tracestate,
        }
    }

    /// Whether trace context is read and handed on (`propagation = "w3c"`).
    pub(crate) fn propagates(&self) -> bool {
        self.read
    }

    /// Whether responses carry `traceparent` (`[tracing] respond`).
    pub(crate) fn responds(&self) -> bool {
        self.respond
    }

    /// The trace context of a request with these incoming headers, and the `tracestate` to carry
    /// on: a child of a valid `traceparent`, otherwise a new trace. A malformed header is
    /// ignored and counted; a `tracestate` without a valid `traceparent` is dropped (W3C).
    pub(crate) fn context<'a>(
        &self,
        traceparent: Option<&str>,
        tracestate: Option<&'a str>,
    ) -> (TraceContext, Option<&'a str>) {
        if !self.read {
            return (TraceContext::root(self.ratio), None);
        }
        let parent = traceparent.and_then(|value| {
            let parent = Parent::parse(value);
            if parent.is_none() {
                self.invalid_traceparent.increment(1);
            }
            parent
        });
        match parent {
            Some(parent) => {
                let state = tracestate.filter(|s| !s.trim().is_empty()).filter(|s| {
                    let valid = is_valid_tracestate(s);
                    if !valid {
                        self.invalid_tracestate.increment(1);
                    }
                    valid
                });
                (TraceContext::child_of(&parent), state)
            }
            None => (TraceContext::root(self.ratio), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_w3c_examples_parse_and_malformed_ones_do_not() {
        let parent = Parent::parse(VALID).unwrap();
        assert_eq!(
            parent.span_id().to_string(),
            "00f067aa0ba902b7",
            "{parent:?}"
        );
        assert!(
            !Parent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                .unwrap()
                .is_sampled()
        );
        // Surrounding whitespace is not part of the value.
        assert!(Parent::parse(&format!(" {VALID}\t")).is_some());
        // A later version with more fields: the first four count.
        assert!(
            Parent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever")
                .is_some()
        );
        for bad in [
            "",
            "garbage",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01é",
        ] {
            assert!(Parent::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_child_keeps_the_trace_and_the_flag_and_gets_a_span_of_its_own() {
        let parent = Parent::parse(VALID).unwrap();
        let child = TraceContext::child_of(&parent);
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_eq!(child.parent_span_id(), Some(parent.span_id()));
        assert_ne!(child.span_id(), parent.span_id());
        assert!(child.is_sampled());
        let header = child.traceparent();
        let again = Parent::parse(&header).unwrap();
        assert_eq!(again.trace_id(), child.trace_id());
        assert_eq!(again.span_id(), child.span_id());
        assert!(again.is_sampled());
    }

    #[test]
    fn roots_are_new_traces_sampled_by_ratio() {
        let a = TraceContext::root(1.0);
        let b = TraceContext::root(1.0);
        assert_ne!(a.trace_id(), b.trace_id());
        assert!(a.is_sampled() && a.parent_span_id().is_none());
        assert!(!TraceContext::root(0.0).is_sampled());
        let sampled = (0..20_000)
            .filter(|_| TraceContext::root(0.25).is_sampled())
            .count();
        assert!((4_000..6_000).contains(&sampled), "{sampled} of 20000");
        // The decision depends on the trace id alone.
        let id = TraceId::from_hex("4bf92f3577b34da6ffffffffffffffff").unwrap();
        assert!(!ratio_samples(0.5, id));
        let id = TraceId::from_hex("4bf92f3577b34da60000000000000001").unwrap();
        assert!(ratio_samples(0.01, id));
    }

    #[test]
    fn ids_round_trip_through_hex() {
        let id = TraceId::random();
        assert_eq!(TraceId::from_hex(&id.to_string()), Some(id));
        let span = SpanId::random();
        assert_eq!(SpanId::from_hex(&span.to_string()), Some(span));
        assert_eq!(span.to_string().len(), 16);
        assert!(SpanId::from_hex("00f067aa0ba902b").is_none());
    }

    #[test]
    fn tracestate_limits() {
        assert!(is_valid_tracestate("a=1"));
        assert!(is_valid_tracestate("a=1, b=2,,"));
        assert!(!is_valid_tracestate(&"a=1,".repeat(33)));
        assert!(!is_valid_tracestate(&format!("a={}", "x".repeat(600))));
        assert!(!is_valid_tracestate("a=1,\u{1}b=2"));
        assert!(!is_valid_tracestate("=1"));
        let mut vec = vec![("TraceParent".to_owned(), "old".to_owned())];
        vec.set(TRACEPARENT, "new".to_owned());
        assert_eq!(vec, [("traceparent".to_owned(), "new".to_owned())]);
    }
}
