//! `kind = "dingtalk"`: a DingTalk custom robot, as a markdown message, signed when `secret` is set.

use base64::Engine as _;

use super::Render;
use super::http::{host_of, json, send};
use super::webhook::hmac_sha256;
use crate::alert::model::Notification;
use crate::alert::{AlertChannel, SendError};
use crate::worker::BoxFuture;

/// The default body of one alert (DingTalk markdown).
pub(super) const DEFAULT_BODY: &str = "#### [{{LEVEL}}] {{name}} {{status}}\n\n**{{summary}}**\n\n{{description}}\n\n- service: {{service}} ({{environment}})\n- labels: {{labels}}\n- seen: {{count}}x\n- since: {{starts_at}}";

/// Posts to a DingTalk robot webhook (`https://oapi.dingtalk.com/robot/send?access_token=…`):
/// `{"msgtype":"markdown","markdown":{"title":<subject>,"text":<bodies>}}`.
///
/// With a `secret` (the robot's "加签" security setting), `timestamp` (milliseconds) and `sign`
/// are added to the query as DingTalk requires (see [`dingtalk_sign`]). DingTalk answers 200 even
/// when it rejects a message; a non-zero `errcode` is an error (retryable for its rate limit,
/// 130101).
#[derive(Debug)]
pub struct DingtalkChannel {
    url: String,
    host: String,
    secret: Option<String>,
    render: Render,
    client: reqwest::Client,
}

/// DingTalk's signature: the URL-encoded base64 of HMAC-SHA256 over `"{timestamp}\n{secret}"`,
/// keyed by the secret.
///
/// ```
/// let sign = qiflow_core::alert::channels::dingtalk_sign(1_700_000_000_000, "SEC123");
/// assert!(sign.ends_with("%3D")); // base64 padding, URL-encoded
/// ```
pub fn dingtalk_sign(timestamp_ms: u128, secret: &str) -> String {
    let message = format!("{timestamp_ms}\n{secret}");
    let mac = hmac_sha256(secret.as_bytes(), message.as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(mac);
    percent_encoding::utf8_percent_encode(&b64, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl DingtalkChannel {
    pub(super) fn new(
        url: String,
        secret: Option<String>,
        render: Render,
        client: reqwest::Client,
    ) -> Self {
        Self {
            host: host_of(&url),
            url,
            secret: secret.filter(|s| !s.is_empty()),
            render,
            client,
        }
    }

    fn url(&self) -> String {
        let Some(secret) = &self.secret else {
            return self.url.clone();
        };
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!(
            "{}{sep}timestamp={ts}&sign={}",
            self.url,
            dingtalk_sign(ts, secret)
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
            let body = send(request, "dingtalk", &self.host).await?;
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            match answer.get("errcode").and_then(serde_json::Value::as_i64) {
                None | Some(0) => Ok(()),
                Some(code) => {
                    let msg = answer
                        .get("errmsg")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("");
                    let message = format!(
                        "dingtalk: {} rejected the message: errcode {code} {msg}",
                        self.host
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
