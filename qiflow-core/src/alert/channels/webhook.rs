//! `kind = "webhook"`: the notification as JSON, optionally signed with HMAC-SHA256.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Render;
use reqwest::header::{HeaderName, HeaderValue};

use super::http::{Scrubber, host_of, send};
use crate::alert::model::{Notification, level_name, rfc3339};
use crate::alert::{AlertChannel, SendError};
use crate::config::{ChannelConfig, Config};
use crate::secret::Secret;
use crate::worker::BoxFuture;

/// POSTs every alert field as JSON to a URL.
///
/// The body is `{"version":"1","status","channel","service","environment","alerts":[{"name",
/// "level","status","summary","description","labels","source","fingerprint","count",
/// "starts_at","ends_at"}]}`, or the channel's `body` template when set. With a `secret`, the
/// header `signature_header` (default `X-Qiflow-Signature`) carries `sha256=<hex>`, the
/// HMAC-SHA256 of the exact body bytes keyed by the secret (see [`webhook_signature`]).
///
/// Built with qiflow-core's `http-channels` feature (on by default).
pub struct WebhookChannel {
    url: Secret,
    host: String,
    secret: Option<Secret>,
    signature_header: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    render: Option<Render>,
    client: reqwest::Client,
    name: String,
    scrub: Scrubber,
}

/// Only what is not secret: the name and the host (never the URL, the secret or the headers).
impl std::fmt::Debug for WebhookChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookChannel")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("signed", &self.secret.is_some())
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl WebhookChannel {
    pub(super) fn from_config(
        config: &Config,
        ch: &ChannelConfig,
        name: &str,
        base: &str,
        url: Secret,
        client: reqwest::Client,
    ) -> Result<Self, String> {
        let render = match &ch.body {
            Some(_) => Some(Render::new(config, ch, name, base, "")?),
            None => None,
        };
        let mut headers = Vec::new();
        let mut scrub = Scrubber::new().url(url.expose());
        for (k, v) in &ch.headers {
            headers.push(header(base, k, v.expose())?);
            scrub = scrub.secret(v.expose());
        }
        let secret = ch.secret.clone().filter(|s| !s.is_empty());
        if let Some(secret) = &secret {
            scrub = scrub.secret(secret.expose());
        }
        Ok(Self {
            host: host_of(url.expose()),
            url,
            secret,
            signature_header: ch.signature_header.clone(),
            headers,
            render,
            client,
            name: name.to_owned(),
            scrub,
        })
    }

    fn body(&self, n: &Notification) -> String {
        if let Some(render) = &self.render {
            return render.body(n, "\n");
        }
        json_body(n).to_string()
    }
}

/// The default webhook body.
pub(crate) fn json_body(n: &Notification) -> serde_json::Value {
    let alerts: Vec<serde_json::Value> = n
        .alerts
        .iter()
        .map(|notice| {
            let a = &notice.alert;
            serde_json::json!({
                "name": a.name,
                "level": level_name(a.level),
                "status": a.status.as_str(),
                "summary": a.summary,
                "description": a.description,
                "labels": a.labels,
                "annotations": a.annotations,
                "source": a.source,
                "fingerprint": notice.fingerprint,
                "count": notice.count,
                "count_since": notice.since.map(rfc3339),
                "count_before_restart": notice.before_restart,
                "starts_at": a.starts_at.map(rfc3339),
                "ends_at": a.ends_at.map(rfc3339),
            })
        })
        .collect();
    serde_json::json!({
        "version": "1",
        "status": n.status().as_str(),
        "channel": n.channel,
        "service": n.service,
        "environment": n.environment,
        "instance": n.instance,
        "alerts": alerts,
    })
}

/// `sha256=<lowercase hex>` of the HMAC-SHA256 of `body` keyed by `secret`: what a receiver
/// recomputes to check a webhook.
///
/// ```
/// use qiflow_core::alert::channels::webhook_signature;
///
/// // RFC 4231, test case 2.
/// assert_eq!(
///     webhook_signature("Jefe", b"what do ya want for nothing?"),
///     "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
/// );
/// ```
pub fn webhook_signature(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), body))
    )
}

/// HMAC-SHA256 of `message` keyed by `key`.
pub(super) fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

pub(super) fn check_header(base: &str, key: &str, value: &str) -> Result<(), String> {
    if HeaderName::from_bytes(key.as_bytes()).is_err() {
        return Err(format!(
            "{base}.headers: {key:?} is not a valid header name"
        ));
    }
    if value.contains(['\r', '\n']) {
        return Err(format!(
            "{base}.headers.{key}: a header value cannot contain a line break"
        ));
    }
    Ok(())
}

/// A header of `[[alerts.channels]] headers`: its value is marked sensitive, so `Debug` of the
/// request, and HTTP/2 header compression, leave it out. Errors never repeat the value.
pub(super) fn header(
    base: &str,
    key: &str,
    value: &str,
) -> Result<(HeaderName, HeaderValue), String> {
    check_header(base, key, value)?;
    let name = HeaderName::from_bytes(key.as_bytes())
        .map_err(|_| format!("{base}.headers: {key:?} is not a valid header name"))?;
    Ok((
        name,
        sensitive_value(value).map_err(|why| format!("{base}.headers.{key}: {why}"))?,
    ))
}

/// `value` as a header value marked sensitive. The error does not repeat it.
pub(super) fn sensitive_value(value: &str) -> Result<HeaderValue, String> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        "is not a valid header value (visible ASCII and spaces only; the value is not shown, \
         it is secret)"
            .to_owned()
    })?;
    v.set_sensitive(true);
    Ok(v)
}

impl AlertChannel for WebhookChannel {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let body = self.body(n);
            let mut request = self
                .client
                .post(self.url.expose())
                .header(reqwest::header::CONTENT_TYPE, "application/json");
            for (k, v) in &self.headers {
                request = request.header(k, v.clone());
            }
            if let Some(secret) = &self.secret {
                request = request.header(
                    self.signature_header.as_str(),
                    webhook_signature(secret.expose(), body.as_bytes()),
                );
            }
            send(request.body(body), &self.name, &self.host, &self.scrub).await?;
            Ok(())
        })
    }
}
