//! `kind = "sms"`: any SMS gateway's HTTP API, through a request template.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::http::{Scrubber, host_of, send};
use super::webhook::{check_header, sensitive_value};
use crate::alert::model::Notification;
use crate::alert::template::{Context, Template, field, oneline, truncate_chars};
use crate::alert::{AlertChannel, SendError};
use crate::config::{ChannelConfig, Config};
use crate::secret::Secret;
use crate::worker::BoxFuture;

/// The default text of one alert.
pub(super) const DEFAULT_MESSAGE: &str = "[{{LEVEL}}] {{name}} {{status}}: {{summary}}";
/// The default request body.
pub(super) const DEFAULT_BODY: &str = r#"{"to":"{{to|json}}","message":"{{message|json}}"}"#;

/// Sends one request per recipient in `to`, built from templates: the `url` (use `{{to|url}}`
/// to put the number in the query), `headers` values and `body`, each over the alert's fields
/// plus `to` (the recipient), `message` (the text) and `token` (the channel's `token`).
///
/// The text is the `message` template (default `[{{LEVEL}}] {{name}} {{status}}: {{summary}}`)
/// for each alert, joined with `; `, on one line, cut to `max_length` characters (default 160)
/// ending with `…`. The default body is `{"to":"…","message":"…"}` as JSON, with
/// `Content-Type: application/json` unless `headers` says otherwise. A recipient that fails fails
/// the notification: the retry sends only to the recipients not reached yet.
///
/// Built with qiflow-core's `http-channels` feature (on by default).
pub struct SmsChannel {
    /// Parsed from the secret `url`: its text parts are secret too.
    url: Template,
    host: String,
    method: reqwest::Method,
    /// Parsed from the secret header values.
    headers: BTreeMap<String, Template>,
    body: Template,
    message: Template,
    to: Vec<String>,
    token: Secret,
    max_length: usize,
    service: String,
    environment: String,
    instance: String,
    name: String,
    client: reqwest::Client,
    /// Recipients already reached for the notification being sent (by fingerprint list).
    reached: std::sync::Mutex<(String, Vec<String>)>,
    scrub: Scrubber,
}

/// Only what is not secret: the name, the host, the method and the header names (never the URL,
/// the header values or the token).
impl std::fmt::Debug for SmsChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsChannel")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("method", &self.method)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("to", &self.to.len())
            .finish_non_exhaustive()
    }
}

/// A template made from a secret value: its parse error names the key and what is allowed, and
/// never repeats the text.
fn secret_template(key: &str, text: &str) -> Result<Template, String> {
    Template::parse(text, EXTRA).map_err(|_| {
        format!(
            "{key}: has a {{{{…}}}} that names no known field or filter (the value is secret, so \
             it is not shown); use {{{{to}}}}, {{{{message}}}}, {{{{token}}}} or an alert field such \
             as {{{{name}}}}, with the filters json, url, upper or oneline"
        )
    })
}

const EXTRA: &[&str] = &["to", "message", "token"];

impl SmsChannel {
    pub(super) fn from_config(
        config: &Config,
        ch: &ChannelConfig,
        name: &str,
        base: &str,
        url: Secret,
        client: reqwest::Client,
    ) -> Result<Self, String> {
        let method = reqwest::Method::from_bytes(ch.method.to_uppercase().as_bytes())
            .map_err(|_| format!("{base}.method: {:?} is not an HTTP method", ch.method))?;
        let mut headers = BTreeMap::new();
        let mut scrub = Scrubber::new().url(url.expose());
        for (k, v) in &ch.headers {
            check_header(base, k, v.expose())?;
            headers.insert(
                k.clone(),
                secret_template(&format!("{base}.headers.{k}"), v.expose())?,
            );
            scrub = scrub.secret(v.expose());
        }
        let token = ch.token.clone().unwrap_or_else(|| Secret::new(""));
        scrub = scrub.secret(token.expose());
        if !headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("content-type"))
        {
            headers.insert(
                "Content-Type".into(),
                Template::parse("application/json", &[]).map_err(|e| format!("{base}: {e}"))?,
            );
        }
        Ok(Self {
            host: host_of(url.expose()),
            url: secret_template(&format!("{base}.url"), url.expose())?,
            method,
            headers,
            body: Template::parse(ch.body.as_deref().unwrap_or(DEFAULT_BODY), EXTRA)
                .map_err(|e| format!("{base}.body: {e}"))?,
            message: Template::parse(ch.message.as_deref().unwrap_or(DEFAULT_MESSAGE), &[])
                .map_err(|e| format!("{base}.message: {e}"))?,
            to: ch.to.clone(),
            token,
            max_length: ch.max_length.max(1),
            service: config.service.name.clone(),
            environment: config.service.environment.clone(),
            instance: config.service.instance.clone(),
            name: name.to_owned(),
            client,
            reached: std::sync::Mutex::new((String::new(), Vec::new())),
            scrub,
        })
    }

    /// The text of `n`: each alert's message joined with `; `, on one line, capped.
    pub(crate) fn text(&self, n: &Notification) -> String {
        let ctx = self.context();
        let joined = n
            .alerts
            .iter()
            .map(|a| self.message.render(&ctx, a, &[]))
            .collect::<Vec<_>>()
            .join("; ");
        truncate_chars(&oneline(&joined), self.max_length)
    }

    fn context(&self) -> Context<'_> {
        Context {
            service: &self.service,
            environment: &self.environment,
            instance: &self.instance,
            channel: &self.name,
        }
    }

    fn render(&self, t: &Template, n: &Notification, to: &str, message: &str) -> String {
        let ctx = self.context();
        let Some(first) = n.alerts.first() else {
            return String::new();
        };
        let extra = [
            ("to", to),
            ("message", message),
            ("token", self.token.expose()),
        ];
        t.render_with(|name| {
            if let Some((_, v)) = extra.iter().find(|(k, _)| *k == name) {
                return Some(Cow::Owned((*v).to_owned()));
            }
            // Other fields come from the first alert of the group.
            field(&ctx, first, name)
        })
    }

    fn key(n: &Notification) -> String {
        n.alerts
            .iter()
            .map(|a| a.fingerprint.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl AlertChannel for SmsChannel {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let message = self.text(n);
            let key = Self::key(n);
            let mut reached = {
                let mut guard = self
                    .reached
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if guard.0 != key {
                    *guard = (key.clone(), Vec::new());
                }
                guard.1.clone()
            };
            let mut first_error = None;
            for to in &self.to {
                if reached.contains(to) {
                    continue;
                }
                let url = self.render(&self.url, n, to, &message);
                let mut request = self.client.request(self.method.clone(), url);
                let mut bad_header = None;
                for (k, t) in &self.headers {
                    match sensitive_value(&oneline(&self.render(t, n, to, &message))) {
                        Ok(value) => request = request.header(k, value),
                        Err(why) => {
                            bad_header = Some(SendError::permanent(format!(
                                "{}: header {k}: {why}",
                                self.name
                            )));
                            break;
                        }
                    }
                }
                if let Some(e) = bad_header {
                    first_error.get_or_insert(e);
                    continue;
                }
                let body = self.render(&self.body, n, to, &message);
                match send(request.body(body), &self.name, &self.host, &self.scrub).await {
                    Ok(_) => reached.push(to.clone()),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            let mut guard = self
                .reached
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match first_error {
                None => {
                    *guard = (String::new(), Vec::new());
                    Ok(())
                }
                Some(e) => {
                    *guard = (key, reached);
                    Err(e)
                }
            }
        })
    }
}
