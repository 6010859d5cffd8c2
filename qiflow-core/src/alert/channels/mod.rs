//! The built-in channels, built from `[[alerts.channels]]`.

mod alertmanager;
mod dingtalk;
mod email;
mod http;
mod slack;
mod sms;
mod webhook;

pub use alertmanager::AlertmanagerChannel;
pub use dingtalk::{DingtalkChannel, dingtalk_sign};
pub use email::EmailChannel;
pub(crate) use email::read_ca_file;
pub use slack::SlackChannel;
pub use sms::SmsChannel;
pub use webhook::{WebhookChannel, webhook_signature};

use super::SendError;
use super::channel::{AlertChannel, LogChannel};
use super::model::Notification;
use super::template::{Context, Template};
use crate::config::{ChannelConfig, ChannelKind, Config};
use crate::worker::BoxFuture;

/// The default subject template.
pub const DEFAULT_SUBJECT: &str = "[{{LEVEL}}] {{name}} {{status}}: {{summary}}";
/// The default body template.
pub const DEFAULT_BODY: &str = "{{LEVEL}} {{name}} is {{status}} (raised {{times}})\n{{summary}}\n{{description}}\n\nservice: {{service}} ({{environment}})\nsource: {{source}}\nlabels: {{labels}}\nsince: {{starts_at}}\nfingerprint: {{fingerprint}}";

/// A channel's subject and body templates and what they see besides the alert.
#[derive(Debug, Clone)]
pub(crate) struct Render {
    subject: Template,
    body: Template,
    service: String,
    environment: String,
    channel: String,
}

impl Render {
    pub(crate) fn new(
        config: &Config,
        ch: &ChannelConfig,
        name: &str,
        base: &str,
        default_body: &str,
    ) -> Result<Self, String> {
        let subject = Template::parse(ch.subject.as_deref().unwrap_or(DEFAULT_SUBJECT), &[])
            .map_err(|e| format!("{base}.subject: {e}"))?;
        let body = Template::parse(ch.body.as_deref().unwrap_or(default_body), &[])
            .map_err(|e| format!("{base}.body: {e}"))?;
        Ok(Self {
            subject,
            body,
            service: config.service.name.clone(),
            environment: config.service.environment.clone(),
            channel: name.to_owned(),
        })
    }

    pub(crate) fn context(&self) -> Context<'_> {
        Context {
            service: &self.service,
            environment: &self.environment,
            channel: &self.channel,
        }
    }

    /// The first alert's subject, plus ` (+N more)` for a group.
    pub(crate) fn subject(&self, n: &Notification) -> String {
        let Some(first) = n.alerts.first() else {
            return String::new();
        };
        let mut s = self.subject.render(&self.context(), first, &[]);
        if n.alerts.len() > 1 {
            s.push_str(&format!(" (+{} more)", n.alerts.len() - 1));
        }
        s
    }

    /// Every alert's body, separated by a blank line.
    pub(crate) fn body(&self, n: &Notification, separator: &str) -> String {
        n.alerts
            .iter()
            .map(|a| self.body.render(&self.context(), a, &[]))
            .collect::<Vec<_>>()
            .join(separator)
    }
}

/// The name a channel goes by: its `name`, else its kind.
pub fn channel_name(ch: &ChannelConfig) -> String {
    ch.name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| kind_name(ch.kind).to_owned())
}

/// The lowercase kind (`"slack"`).
pub fn kind_name(kind: ChannelKind) -> &'static str {
    match kind {
        ChannelKind::Log => "log",
        ChannelKind::Webhook => "webhook",
        ChannelKind::Slack => "slack",
        ChannelKind::Dingtalk => "dingtalk",
        ChannelKind::Email => "email",
        ChannelKind::Sms => "sms",
        ChannelKind::Alertmanager => "alertmanager",
    }
}

/// A channel built from one `[[alerts.channels]]` entry: one of the built-in channels.
///
/// Its `Debug` shows only what is not secret (the kind, the name or host); URLs, signing
/// secrets, tokens, passwords and header values never appear.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfiguredChannel {
    /// `kind = "log"`.
    Log(LogChannel),
    /// `kind = "webhook"`.
    Webhook(WebhookChannel),
    /// `kind = "slack"`.
    Slack(SlackChannel),
    /// `kind = "dingtalk"`.
    Dingtalk(DingtalkChannel),
    /// `kind = "sms"`.
    Sms(SmsChannel),
    /// `kind = "alertmanager"`.
    Alertmanager(AlertmanagerChannel),
    /// `kind = "email"`.
    Email(EmailChannel),
}

impl AlertChannel for ConfiguredChannel {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), SendError>> {
        match self {
            Self::Log(c) => c.send(n),
            Self::Webhook(c) => c.send(n),
            Self::Slack(c) => c.send(n),
            Self::Dingtalk(c) => c.send(n),
            Self::Sms(c) => c.send(n),
            Self::Alertmanager(c) => c.send(n),
            Self::Email(c) => c.send(n),
        }
    }
}

/// Builds the `index`th channel of `config.alerts.channels`, as `init` does, with an HTTP client
/// of its own. Errors name the key path (`alerts.channels.ops.headers.X-Token: …`) and never
/// repeat a secret value.
///
/// ```
/// use qiflow_core::alert::channels::{ConfiguredChannel, from_config};
///
/// let config = qiflow_core::config::Loader::new()
///     .toml_str("[[alerts.channels]]\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T0/B0/s3cr3t-t0ken\"\n")
///     .env::<[(&str, &str); 0], _, _>([])
///     .load()
///     .unwrap();
/// let channel = from_config(&config, 0).unwrap();
/// assert!(matches!(channel, ConfiguredChannel::Slack(_)));
/// let shown = format!("{channel:?}");
/// assert!(shown.contains("hooks.slack.com") && !shown.contains("s3cr3t-t0ken"));
/// assert!(from_config(&config, 1).is_err());
/// ```
pub fn from_config(config: &Config, index: usize) -> Result<ConfiguredChannel, String> {
    let ch = config.alerts.channels.get(index).ok_or_else(|| {
        format!(
            "alerts.channels: there is no channel {index} ({} configured)",
            config.alerts.channels.len()
        )
    })?;
    let client = reqwest::Client::builder()
        .user_agent(concat!("qiflow/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("alerts: cannot build the HTTP client: {e}"))?;
    build(config, ch, index, &client)
}

/// Builds the channel `ch` (the `index`th of `[[alerts.channels]]`). Errors name the key.
pub(crate) fn build(
    config: &Config,
    ch: &ChannelConfig,
    index: usize,
    client: &reqwest::Client,
) -> Result<ConfiguredChannel, String> {
    let name = channel_name(ch);
    let base = ch.key_path(index);
    let url = || {
        ch.url
            .clone()
            .ok_or_else(|| format!("{base}.url: is required for a {name} channel"))
    };
    Ok(match ch.kind {
        ChannelKind::Log => ConfiguredChannel::Log(LogChannel),
        ChannelKind::Webhook => ConfiguredChannel::Webhook(WebhookChannel::from_config(
            config,
            ch,
            &name,
            &base,
            url()?,
            client.clone(),
        )?),
        ChannelKind::Slack => ConfiguredChannel::Slack(SlackChannel::new(
            url()?,
            Render::new(config, ch, &name, &base, slack::DEFAULT_BODY)?,
            client.clone(),
        )),
        ChannelKind::Dingtalk => ConfiguredChannel::Dingtalk(DingtalkChannel::new(
            url()?,
            ch.secret.clone(),
            Render::new(config, ch, &name, &base, dingtalk::DEFAULT_BODY)?,
            client.clone(),
        )),
        ChannelKind::Sms => ConfiguredChannel::Sms(SmsChannel::from_config(
            config,
            ch,
            &name,
            &base,
            url()?,
            client.clone(),
        )?),
        ChannelKind::Alertmanager => ConfiguredChannel::Alertmanager(AlertmanagerChannel::new(
            &url()?,
            config,
            client.clone(),
        )),
        ChannelKind::Email => {
            ConfiguredChannel::Email(EmailChannel::from_config(config, ch, &name, &base)?)
        }
    })
}
