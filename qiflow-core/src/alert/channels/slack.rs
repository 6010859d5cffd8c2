//! `kind = "slack"`: a Slack incoming webhook, as a Block Kit message.

use super::Render;
use super::http::{Scrubber, host_of, json, send};
use crate::alert::model::{AlertStatus, Notification, level_name};
use crate::alert::template::truncate_chars;
use crate::alert::{AlertChannel, SendError};
use crate::config::AlertLevel;
use crate::secret::Secret;
use crate::worker::BoxFuture;

/// The default body of one alert's section (Slack mrkdwn).
pub(super) const DEFAULT_BODY: &str = "*{{summary}}*\n{{description}}\n_{{labels}}_ {{annotations}} · raised {{times}} · source {{source}}";

/// Slack allows at most 50 blocks per message.
const MAX_BLOCKS: usize = 50;

/// Posts to a Slack incoming webhook: a header block (the subject template), then per alert a
/// section (the body template, mrkdwn) and a context line; `text` carries the subject for
/// notifications and clients without blocks.
///
/// Built with qiflow-core's `http-channels` feature (on by default).
pub struct SlackChannel {
    url: Secret,
    host: String,
    render: Render,
    client: reqwest::Client,
    scrub: Scrubber,
}

/// Only the host: the webhook URL's path is its token.
impl std::fmt::Debug for SlackChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackChannel")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl SlackChannel {
    pub(super) fn new(url: Secret, render: Render, client: reqwest::Client) -> Self {
        Self {
            host: host_of(url.expose()),
            scrub: Scrubber::new().url(url.expose()),
            url,
            render,
            client,
        }
    }

    /// The Block Kit payload.
    pub(crate) fn payload(&self, n: &Notification) -> serde_json::Value {
        let subject = self.render.subject(n);
        let mut blocks = vec![serde_json::json!({
            "type": "header",
            "text": {"type": "plain_text", "text": truncate_chars(&subject, 150), "emoji": true},
        })];
        let ctx = self.render.context();
        // Two blocks per alert after the header, and one for "N more".
        let shown = n.alerts.len().min((MAX_BLOCKS - 2) / 2);
        for notice in &n.alerts[..shown] {
            let a = &notice.alert;
            let icon = match (a.status, a.level) {
                (AlertStatus::Resolved, _) => ":white_check_mark:",
                (_, AlertLevel::Critical) => ":rotating_light:",
                (_, AlertLevel::Error) => ":red_circle:",
                (_, AlertLevel::Warning) => ":warning:",
                _ => ":information_source:",
            };
            let text = escape(&self.render.body.render(&ctx, notice, &[]));
            blocks.push(serde_json::json!({
                "type": "section",
                "text": {"type": "mrkdwn", "text": truncate_chars(&format!("{icon} {text}"), 3000)},
            }));
            blocks.push(serde_json::json!({
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": escape(&format!(
                    "{} · {} · {} · {} ({}) · {} · {}",
                    level_name(a.level), a.status.as_str(), a.name, ctx.service, ctx.environment,
                    ctx.instance, notice.fingerprint
                ))}],
            }));
        }
        if shown < n.alerts.len() {
            blocks.push(serde_json::json!({
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": format!("and {} more", n.alerts.len() - shown)}],
            }));
        }
        serde_json::json!({ "text": subject, "blocks": blocks })
    }
}

/// Slack's mrkdwn escaping: `&`, `<` and `>` (so an alert field cannot ping `<!channel>`).
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl AlertChannel for SlackChannel {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let request = self.client.post(self.url.expose());
            let request = json(request, &self.payload(n));
            send(request, "slack", &self.host, &self.scrub).await?;
            Ok(())
        })
    }
}
