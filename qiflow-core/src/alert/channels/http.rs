//! HTTP sends shared by the channels: status codes mapped to retryable or permanent errors.

use std::time::Duration;

use crate::alert::SendError;

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
pub(super) async fn send(
    request: reqwest::RequestBuilder,
    channel: &str,
    host: &str,
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
    let snippet: String = body.chars().take(200).collect();
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
