//! HTTP sends shared by the channels: status codes mapped to retryable or permanent errors.

use std::time::Duration;

use crate::alert::SendError;
use crate::secret::Secret;

/// The longest `Retry-After` honoured; longer ones are capped (the retry deadline still applies).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// The host of `url`, for error messages (never the path or query, which carry tokens).
pub(super) fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
        })
        .unwrap_or_else(|| "<invalid url>".to_owned())
}

/// What a channel never repeats in an error message: its secrets, and the credentials, path and
/// query of its URL. A server that echoes the request in its answer (a framework's default 404
/// page: `Cannot POST /hooks/<token>`) would otherwise put them in a log line, an alert view or a
/// metric-adjacent error.
#[derive(Default)]
pub(super) struct Scrubber {
    /// Longest first, so a value that contains another is replaced whole.
    values: Vec<Secret>,
}

impl Scrubber {
    /// The shortest value worth replacing: shorter ones are not credentials and would mangle
    /// the message.
    const MIN_LEN: usize = 4;

    pub(super) fn new() -> Self {
        Self::default()
    }

    /// Adds a secret value.
    pub(super) fn secret(mut self, value: &str) -> Self {
        self.add(value);
        self
    }

    /// Adds a URL: the whole text, its user name and password, its path and query, each path
    /// segment and each query value.
    pub(super) fn url(mut self, text: &str) -> Self {
        self.add(text);
        if let Ok(url) = url::Url::parse(text) {
            self.add(url.username());
            if let Some(password) = url.password() {
                self.add(password);
            }
            if !url.username().is_empty() || url.password().is_some() {
                // The `Authorization: Basic` header the client makes of them, should it be echoed.
                use base64::Engine as _;
                let decode = |s: &str| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8_lossy()
                        .into_owned()
                };
                let pair = format!(
                    "{}:{}",
                    decode(url.username()),
                    decode(url.password().unwrap_or_default())
                );
                self.add(&base64::engine::general_purpose::STANDARD.encode(pair));
            }
            if url.path() != "/" {
                self.add(url.path());
            }
            for segment in url.path_segments().into_iter().flatten() {
                self.add(segment);
                self.add(&percent_encoding::percent_decode_str(segment).decode_utf8_lossy());
            }
            if let Some(query) = url.query() {
                self.add(query);
            }
            for (_, value) in url.query_pairs() {
                self.add(&value);
            }
        }
        self
    }

    fn add(&mut self, value: &str) {
        if value.chars().count() >= Self::MIN_LEN
            && !self.values.iter().any(|v| v.expose() == value)
        {
            self.values.push(Secret::new(value));
            self.values
                .sort_by_key(|v| std::cmp::Reverse(v.expose().len()));
        }
    }

    /// `text` with every value replaced by `[REDACTED]`.
    pub(super) fn apply(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for value in &self.values {
            if out.contains(value.expose()) {
                out = out.replace(value.expose(), crate::logging::REDACTED);
            }
        }
        out
    }
}

/// `request` with `value` as its JSON body.
pub(super) fn json(
    request: reqwest::RequestBuilder,
    value: &serde_json::Value,
) -> reqwest::RequestBuilder {
    request
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(value.to_string())
}

/// Sends `request` and returns the response body when the status is 2xx; else an error that is
/// retryable for 408, 425, 429 (after its `Retry-After`), 5xx and transport failures.
/// The answer's body is cut to 200 characters in messages, with `scrub` applied.
pub(super) async fn send(
    request: reqwest::RequestBuilder,
    channel: &str,
    host: &str,
    scrub: &Scrubber,
) -> Result<String, SendError> {
    let response = request.send().await.map_err(|e| {
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else {
            "request failed"
        };
        // reqwest's message can carry the URL (with its token): name only the host.
        SendError::retryable(format!("{channel}: {what} to {host}"))
    })?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        return Ok(body);
    }
    let snippet: String = scrub.apply(&body).chars().take(200).collect();
    let message = format!("{channel}: {host} answered {status}: {}", snippet.trim());
    Err(match status.as_u16() {
        429 => match retry_after {
            Some(after) => SendError::retry_after(after.min(MAX_RETRY_AFTER), message),
            None => SendError::retryable(message),
        },
        408 | 425 | 500..=599 => SendError::retryable(message),
        _ => SendError::permanent(message),
    })
}

pub(super) use crate::retry_after::parse as parse_retry_after;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn the_scrubber_hides_secrets_and_url_parts() {
        let scrub = Scrubber::new()
            .url("https://user:pa55word@hooks.example.com/services/T0/B0/tok%2Bsecret?access_token=qwerty123&x=1")
            .secret("hmac-secret")
            .secret("abc");
        let echoed = "Cannot POST /services/T0/B0/tok%2Bsecret?access_token=qwerty123&x=1 \
                      (user pa55word, sig hmac-secret, token tok+secret, q qwerty123, abc) \
                      authorization: Basic dXNlcjpwYTU1d29yZA==";
        let out = scrub.apply(echoed);
        for leak in [
            "tok%2Bsecret",
            "tok+secret",
            "qwerty123",
            "pa55word",
            "hmac-secret",
        ] {
            assert!(!out.contains(leak), "{leak} in {out}");
        }
        // Short values are not credentials and stay.
        assert!(
            out.contains("abc") && out.starts_with("Cannot POST "),
            "{out}"
        );
        assert!(out.contains("[REDACTED]"), "{out}");
    }

    #[test]
    fn host_hides_path_and_query() {
        assert_eq!(
            host_of("https://hooks.slack.com/services/T0/B0/secret"),
            "hooks.slack.com"
        );
        assert_eq!(
            host_of("http://127.0.0.1:9093/api?token=x"),
            "127.0.0.1:9093"
        );
    }
}
