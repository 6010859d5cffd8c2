//! The built-in channels, built from `[[alerts.channels]]`.
//!
//! `kind = "log"` is always there. The others are Cargo features of qiflow-core, both on by
//! default: `email` (SMTP through lettre) and `http-channels` (`webhook`, `slack`, `dingtalk`,
//! `sms`, `alertmanager`, through reqwest). A configuration naming a kind whose feature is off
//! fails to load, naming the feature.

#[cfg(feature = "http-channels")]
mod alertmanager;
#[cfg(feature = "http-channels")]
mod dingtalk;
#[cfg(feature = "email")]
mod email;
#[cfg(feature = "http-channels")]
mod http;
#[cfg(feature = "http-channels")]
mod slack;
#[cfg(feature = "http-channels")]
mod sms;
#[cfg(feature = "http-channels")]
mod webhook;

#[cfg(feature = "http-channels")]
pub use alertmanager::AlertmanagerChannel;
#[cfg(feature = "http-channels")]
pub use dingtalk::DingtalkChannel;
#[cfg(feature = "email")]
pub use email::EmailChannel;
#[cfg(feature = "email")]
pub(crate) use email::read_ca_file;
#[cfg(feature = "http-channels")]
pub use slack::SlackChannel;
#[cfg(feature = "http-channels")]
pub use sms::SmsChannel;
#[cfg(feature = "http-channels")]
pub use webhook::{WebhookChannel, webhook_signature};

use super::SendError;
use super::channel::{AlertChannel, LogChannel};
use super::model::Notification;
#[cfg(any(feature = "email", feature = "http-channels"))]
use super::template::{Context, Template};
use crate::config::{ChannelConfig, ChannelKind, Config};
use crate::worker::BoxFuture;

/// The default subject template.
pub const DEFAULT_SUBJECT: &str = "[{{LEVEL}}] {{name}} {{status}}: {{summary}}";
/// The default body template.
pub const DEFAULT_BODY: &str = "{{LEVEL}} {{name}} is {{status}} (raised {{times}})\n{{summary}}\n{{description}}\n\nservice: {{service}} ({{environment}}) on {{instance}}\nsource: {{source}}\nlabels: {{labels}}\nannotations: {{annotations}}\nsince: {{starts_at}}\nfingerprint: {{fingerprint}}";

/// A channel's subject and body templates and what they see besides the alert.
#[cfg(any(feature = "email", feature = "http-channels"))]
#[derive(Debug, Clone)]
pub(crate) struct Render {
    subject: Template,
    body: Template,
    service: String,
    environment: String,
    instance: String,
    channel: String,
}

#[cfg(any(feature = "email", feature = "http-channels"))]
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
            instance: config.service.instance.clone(),
            channel: name.to_owned(),
        })
    }

    pub(crate) fn context(&self) -> Context<'_> {
        Context {
            service: &self.service,
            environment: &self.environment,
            instance: &self.instance,
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

/// The Cargo feature of qiflow-core that channels of `kind` need, when this build lacks it
/// (`None`: this build has them).
pub(crate) fn missing_feature(kind: ChannelKind) -> Option<&'static str> {
    match kind {
        ChannelKind::Log => None,
        ChannelKind::Email => (!cfg!(feature = "email")).then_some("email"),
        ChannelKind::Webhook
        | ChannelKind::Slack
        | ChannelKind::Dingtalk
        | ChannelKind::Sms
        | ChannelKind::Alertmanager => {
            (!cfg!(feature = "http-channels")).then_some("http-channels")
        }
    }
}

/// A channel built from one `[[alerts.channels]]` entry: one of the built-in channels. The
/// variants other than `Log` exist with the Cargo feature of their kind (`email`,
/// `http-channels`).
///
/// Its `Debug` shows only what is not secret (the kind, the name or host); URLs, signing
/// secrets, tokens, passwords and header values never appear.
#[derive(Debug)]
#[non_exhaustive]
// With `email` alone, the other variant is the empty `Log`: one value per channel, made once at
// start, is not worth a box.
#[cfg_attr(
    all(feature = "email", not(feature = "http-channels")),
    allow(clippy::large_enum_variant)
)]
pub enum ConfiguredChannel {
    /// `kind = "log"`.
    Log(LogChannel),
    /// `kind = "webhook"`.
    #[cfg(feature = "http-channels")]
    Webhook(WebhookChannel),
    /// `kind = "slack"`.
    #[cfg(feature = "http-channels")]
    Slack(SlackChannel),
    /// `kind = "dingtalk"`.
    #[cfg(feature = "http-channels")]
    Dingtalk(DingtalkChannel),
    /// `kind = "sms"`.
    #[cfg(feature = "http-channels")]
    Sms(SmsChannel),
    /// `kind = "alertmanager"`.
    #[cfg(feature = "http-channels")]
    Alertmanager(AlertmanagerChannel),
    /// `kind = "email"`.
    #[cfg(feature = "email")]
    Email(EmailChannel),
}

impl AlertChannel for ConfiguredChannel {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), SendError>> {
        match self {
            Self::Log(c) => c.send(n),
            #[cfg(feature = "http-channels")]
            Self::Webhook(c) => c.send(n),
            #[cfg(feature = "http-channels")]
            Self::Slack(c) => c.send(n),
            #[cfg(feature = "http-channels")]
            Self::Dingtalk(c) => c.send(n),
            #[cfg(feature = "http-channels")]
            Self::Sms(c) => c.send(n),
            #[cfg(feature = "http-channels")]
            Self::Alertmanager(c) => c.send(n),
            #[cfg(feature = "email")]
            Self::Email(c) => c.send(n),
        }
    }
}

/// What the built-in channels share: one HTTP client (one connection pool) for every HTTP
/// channel.
pub(crate) struct Transports {
    #[cfg(feature = "http-channels")]
    http: reqwest::Client,
}

impl Transports {
    /// The shared clients, ready to send.
    pub(crate) fn new() -> Result<Self, String> {
        Ok(Self {
            #[cfg(feature = "http-channels")]
            http: reqwest::Client::builder()
                .user_agent(concat!("qiflow/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("alerts: cannot build the HTTP client: {e}"))?,
        })
    }
}

/// Builds the `index`th channel of `config.alerts.channels`, as `init` does, with an HTTP client
/// of its own. Errors name the key path (`alerts.channels.ops.headers.X-Token: …`) and never
/// repeat a secret value; a kind this build lacks names the Cargo feature to turn on.
///
/// ```
/// # #[cfg(feature = "http-channels")] {
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
/// # }
/// ```
pub fn from_config(config: &Config, index: usize) -> Result<ConfiguredChannel, String> {
    let ch = config.alerts.channels.get(index).ok_or_else(|| {
        format!(
            "alerts.channels: there is no channel {index} ({} configured)",
            config.alerts.channels.len()
        )
    })?;
    build(config, ch, index, &Transports::new()?)
}

/// Builds the channel `ch` (the `index`th of `[[alerts.channels]]`). Errors name the key.
// Without a channel feature, what serves only its kinds (the transports, the name) goes unused.
#[cfg_attr(
    not(all(feature = "email", feature = "http-channels")),
    allow(unused_variables)
)]
pub(crate) fn build(
    config: &Config,
    ch: &ChannelConfig,
    index: usize,
    transports: &Transports,
) -> Result<ConfiguredChannel, String> {
    let name = channel_name(ch);
    let base = ch.key_path(index);
    #[cfg(feature = "http-channels")]
    let url = || {
        ch.url
            .clone()
            .ok_or_else(|| format!("{base}.url: is required for a {name} channel"))
    };
    #[cfg(feature = "http-channels")]
    let client = &transports.http;
    #[cfg(not(all(feature = "email", feature = "http-channels")))]
    let not_built = |feature: &str| {
        let what = format!("{:?}", kind_name(ch.kind));
        format!(
            "{base}.kind: {}",
            crate::config::needs_feature(&what, feature)
        )
    };
    Ok(match ch.kind {
        ChannelKind::Log => ConfiguredChannel::Log(LogChannel),
        #[cfg(feature = "http-channels")]
        ChannelKind::Webhook => ConfiguredChannel::Webhook(WebhookChannel::from_config(
            config,
            ch,
            &name,
            &base,
            url()?,
            client.clone(),
        )?),
        #[cfg(feature = "http-channels")]
        ChannelKind::Slack => ConfiguredChannel::Slack(SlackChannel::new(
            url()?,
            Render::new(config, ch, &name, &base, slack::DEFAULT_BODY)?,
            client.clone(),
        )),
        #[cfg(feature = "http-channels")]
        ChannelKind::Dingtalk => ConfiguredChannel::Dingtalk(DingtalkChannel::new(
            url()?,
            ch.secret.clone(),
            Render::new(config, ch, &name, &base, dingtalk::DEFAULT_BODY)?,
            client.clone(),
        )),
        #[cfg(feature = "http-channels")]
        ChannelKind::Sms => ConfiguredChannel::Sms(SmsChannel::from_config(
            config,
            ch,
            &name,
            &base,
            url()?,
            client.clone(),
        )?),
        #[cfg(feature = "http-channels")]
        ChannelKind::Alertmanager => ConfiguredChannel::Alertmanager(AlertmanagerChannel::new(
            &ch.url.iter().chain(&ch.urls).cloned().collect::<Vec<_>>(),
            config,
            client.clone(),
        )),
        #[cfg(not(feature = "http-channels"))]
        ChannelKind::Webhook
        | ChannelKind::Slack
        | ChannelKind::Dingtalk
        | ChannelKind::Sms
        | ChannelKind::Alertmanager => return Err(not_built("http-channels")),
        #[cfg(feature = "email")]
        ChannelKind::Email => {
            ConfiguredChannel::Email(EmailChannel::from_config(config, ch, &name, &base)?)
        }
        #[cfg(not(feature = "email"))]
        ChannelKind::Email => return Err(not_built("email")),
    })
}
