//! `kind = "dingtalk"`: a DingTalk custom robot, as a markdown message, signed when `secret` is set.

use base64::Engine as _;

use super::Render;
use super::http::{Scrubber, host_of, json, send};
use super::webhook::hmac_sha256;
use crate::alert::model::Notification;
use crate::alert::{AlertChannel, SendError};
use crate::secret::Secret;
use crate::worker::BoxFuture;

/// The default body of one alert (DingTalk markdown).
pub(super) const DEFAULT_BODY: &str = "#### [{{LEVEL}}] {{name}} {{status}}\n\n**{{summary}}**\n\n{{description}}\n\n- service: {{service}} ({{environment}})\n- instance: {{instance}}\n- labels: {{labels}}\n- annotations: {{annotations}}\n- raised: {{times}}\n- since: {{starts_at}}";

/// Posts to a DingTalk robot webhook (`https://oapi.dingtalk.com/robot/send?access_token=…`):
/// `{"msgtype":"markdown","markdown":{"title":<subject>,"text":<bodies>}}`.
///
/// With a `secret` (the robot's "加签" security setting), `timestamp` (milliseconds) and `sign`
/// are added to the query as DingTalk requires (HMAC-SHA256 of the timestamp and the secret). DingTalk answers 200 even
/// when it rejects a message; a non-zero `errcode` is an error (retryable for its rate limit,
/// 130101).
///
/// Built with qiflow-core's `http-channels` feature (on by default).
pub struct DingtalkChannel {
    url: Secret,
    host: String,
    secret: Option<Secret>,
    render: Render,
    client: reqwest::Client,
    scrub: Scrubber,
}

/// Only the host: the URL carries the robot's `access_token`.
impl std::fmt::Debug for DingtalkChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DingtalkChannel")
            .field("host", &self.host)
            .field("signed", &self.secret.is_some())
            .finish_non_exhaustive()
    }
}

/// DingTalk's signature: the URL-encoded base64 of HMAC-SHA256 over `"{timestamp}\n{secret}"`,
/// keyed by the secret (`dingtalk_signs_as_dingtalk_checks_and_sends_markdown` in
/// `tests/alert_channels.rs` checks it the way DingTalk does).
pub(crate) fn dingtalk_sign(timestamp_ms: u128, secret: &str) -> String {
    let message = format!("{timestamp_ms}\n{secret}");
    let mac = hmac_sha256(secret.as_bytes(), message.as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(mac);
    percent_encoding::utf8_percent_encode(&b64, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl DingtalkChannel {
    pub(super) fn new(
        url: Secret,
        secret: Option<Secret>,
        render: Render,
        client: reqwest::Client,
    ) -> Self {
        let secret = secret.filter(|s| !s.is_empty());
        let mut scrub = Scrubber::new().url(url.expose());
        if let Some(secret) = &secret {
            scrub = scrub.secret(secret.expose());
        }
        Self {
            host: host_of(url.expose()),
            url,
            secret,
            render,
            client,
            scrub,
        }
    }

    /// The URL to post to: with `timestamp` and `sign` when signed.
    fn url(&self) -> String {
        let url = self.url.expose();
        let Some(secret) = &self.secret else {
            return url.to_owned();
        };
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let sep = if url.contains('?') { '&' } else { '?' };
        format!(
            "{url}{sep}timestamp={ts}&sign={}",
            dingtalk_sign(ts, secret.expose())
        )
    }
}

impl AlertChannel for DingtalkChannel {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let payload = serde_json::json!({
                "msgtype": "markdown",
                "markdown": {
                    "title": self.render.subject(n),
                    "text": self.render.body(n, "\n\n---\n\n"),
                },
            });
            let request = self.client.post(self.url());
            let request = json(request, &payload);
            let body = send(request, "dingtalk", &self.host, &self.scrub).await?;
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            match answer.get("errcode").and_then(serde_json::Value::as_i64) {
                None | Some(0) => Ok(()),
                Some(code) => {
                    let msg = answer
                        .get("errmsg")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("");
                    let message = format!(
                        "dingtalk: {} rejected the message: errcode {code} {}",
                        self.host,
                        self.scrub.apply(msg)
                    );
                    Err(if code == 130101 {
                        SendError::retryable(message)
                    } else {
                        SendError::permanent(message)
                    })
                }
            }
        })
    }
}
