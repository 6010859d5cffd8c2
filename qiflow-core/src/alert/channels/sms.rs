//! `kind = "sms"`: any SMS gateway's HTTP API, through a request template.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::http::{host_of, send};
use super::webhook::check_header;
use crate::alert::model::Notification;
use crate::alert::template::{Context, Template, field, oneline, truncate_chars};
use crate::alert::{AlertChannel, SendError};
use crate::config::{ChannelConfig, Config};
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
#[derive(Debug)]
pub struct SmsChannel {
    url: Template,
    host: String,
    method: reqwest::Method,
    headers: BTreeMap<String, Template>,
    body: Template,
    message: Template,
    to: Vec<String>,
    token: String,
    max_length: usize,
    service: String,
    environment: String,
    name: String,
    client: reqwest::Client,
    /// Recipients already reached for the notification being sent (by fingerprint list).
    reached: std::sync::Mutex<(String, Vec<String>)>,
}

const EXTRA: &[&str] = &["to", "message", "token"];

impl SmsChannel {
    pub(super) fn from_config(
        config: &Config,
        ch: &ChannelConfig,
        name: &str,
        base: &str,
        url: String,
        client: reqwest::Client,
    ) -> Result<Self, String> {
        let method = reqwest::Method::from_bytes(ch.method.to_uppercase().as_bytes())
            .map_err(|_| format!("{base}.method: {:?} is not an HTTP method", ch.method))?;
        let mut headers = BTreeMap::new();
        for (k, v) in &ch.headers {
            check_header(base, k, v)?;
            headers.insert(
                k.clone(),
                Template::parse(v, EXTRA).map_err(|e| format!("{base}.headers.{k}: {e}"))?,
            );
        }
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
            host: host_of(&url),
            url: Template::parse(&url, EXTRA).map_err(|e| format!("{base}.url: {e}"))?,
            method,
            headers,
            body: Template::parse(ch.body.as_deref().unwrap_or(DEFAULT_BODY), EXTRA)
                .map_err(|e| format!("{base}.body: {e}"))?,
            message: Template::parse(ch.message.as_deref().unwrap_or(DEFAULT_MESSAGE), &[])
                .map_err(|e| format!("{base}.message: {e}"))?,
            to: ch.to.clone(),
            token: ch
                .token
                .as_ref()
                .map(|t| t.expose().to_owned())
                .unwrap_or_default(),
            max_length: ch.max_length.max(1),
            service: config.service.name.clone(),
            environment: config.service.environment.clone(),
            name: name.to_owned(),
            client,
            reached: std::sync::Mutex::new((String::new(), Vec::new())),
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
            ("token", self.token.as_str()),
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
                for (k, t) in &self.headers {
                    request = request.header(k, oneline(&self.render(t, n, to, &message)));
                }
                let body = self.render(&self.body, n, to, &message);
                match send(request.body(body), &self.name, &self.host).await {
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
