//! The built-in channels, built from `[[alerts.channels]]`.

mod alertmanager;
mod dingtalk;
mod email;
mod http;
mod slack;
mod sms;
mod webhook;

use std::sync::Arc;

pub use alertmanager::AlertmanagerChannel;
pub use dingtalk::{DingtalkChannel, dingtalk_sign};
pub use email::EmailChannel;
pub(crate) use email::read_ca_file;
pub use slack::SlackChannel;
pub use sms::SmsChannel;
pub use webhook::{WebhookChannel, webhook_signature};

use super::channel::{AlertChannel, LogChannel};
use super::model::Notification;
use super::template::{Context, Template};
use crate::config::{ChannelConfig, ChannelKind, Config};

/// The default subject template.
pub const DEFAULT_SUBJECT: &str = "[{{LEVEL}}] {{name}} {{status}}: {{summary}}";
/// The default body template.
pub const DEFAULT_BODY: &str = "{{LEVEL}} {{name}} is {{status}} ({{count}}x)\n{{summary}}\n{{description}}\n\nservice: {{service}} ({{environment}})\nsource: {{source}}\nlabels: {{labels}}\nsince: {{starts_at}}\nfingerprint: {{fingerprint}}";

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

/// Builds the channel `ch` (the `index`th of `[[alerts.channels]]`). Errors name the key.
pub(crate) fn build(
    config: &Config,
    ch: &ChannelConfig,
    index: usize,
    client: &reqwest::Client,
) -> Result<Arc<dyn AlertChannel>, String> {
    let name = channel_name(ch);
    let base = ch.key_path(index);
    let url = || {
        ch.url
            .as_ref()
            .map(|u| u.expose().to_owned())
            .ok_or_else(|| format!("{base}.url: is required for a {name} channel"))
    };
    Ok(match ch.kind {
        ChannelKind::Log => Arc::new(LogChannel),
        ChannelKind::Webhook => Arc::new(WebhookChannel::from_config(
            config,
            ch,
            &name,
            &base,
            url()?,
            client.clone(),
        )?),
        ChannelKind::Slack => Arc::new(SlackChannel::new(
            url()?,
            Render::new(config, ch, &name, &base, slack::DEFAULT_BODY)?,
            client.clone(),
        )),
        ChannelKind::Dingtalk => Arc::new(DingtalkChannel::new(
            url()?,
            ch.secret.as_ref().map(|s| s.expose().to_owned()),
            Render::new(config, ch, &name, &base, dingtalk::DEFAULT_BODY)?,
            client.clone(),
        )),
        ChannelKind::Sms => Arc::new(SmsChannel::from_config(
            config,
            ch,
            &name,
            &base,
            url()?,
            client.clone(),
        )?),
        ChannelKind::Alertmanager => {
            Arc::new(AlertmanagerChannel::new(&url()?, config, client.clone()))
        }
        ChannelKind::Email => Arc::new(EmailChannel::from_config(config, ch, &name, &base)?),
    })
}
