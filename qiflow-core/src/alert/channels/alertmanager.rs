//! `kind = "alertmanager"`: POST `/api/v2/alerts` to a Prometheus Alertmanager.

use super::http::{Scrubber, host_of, json, send};
use crate::alert::model::{AlertStatus, Notification, level_name, rfc3339};
use crate::alert::{AlertChannel, SendError};
use crate::config::Config;
use crate::secret::Secret;
use crate::worker::BoxFuture;

/// Posts alerts to an Alertmanager's `POST /api/v2/alerts` (the `url` is its base,
/// `http://alertmanager:9093`; a URL already ending in `/api/v2/alerts` is used as is).
///
/// Each alert becomes `{"labels":{"alertname","severity","service","environment",<labels>},
/// "annotations":{"summary","description","source","fingerprint","count",<annotations>},
/// "startsAt"}`; a
/// resolved alert also has `endsAt`, which resolves it in Alertmanager. Alertmanager then
/// applies its own routing, grouping and inhibition.
///
/// Built with qiflow-core's `http-channels` feature (on by default).
pub struct AlertmanagerChannel {
    url: Secret,
    host: String,
    service: String,
    environment: String,
    client: reqwest::Client,
    scrub: Scrubber,
}

/// Only the host: the URL may carry credentials (`https://user:password@…`).
impl std::fmt::Debug for AlertmanagerChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertmanagerChannel")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl AlertmanagerChannel {
    pub(super) fn new(url: &Secret, config: &Config, client: reqwest::Client) -> Self {
        let trimmed = url.expose().trim_end_matches('/');
        let url = Secret::new(if trimmed.ends_with("/api/v2/alerts") {
            trimmed.to_owned()
        } else {
            format!("{trimmed}/api/v2/alerts")
        });
        Self {
            host: host_of(url.expose()),
            scrub: Scrubber::new().url(url.expose()),
            url,
            service: config.service.name.clone(),
            environment: config.service.environment.clone(),
            client,
        }
    }

    pub(crate) fn payload(&self, n: &Notification) -> serde_json::Value {
        let alerts: Vec<serde_json::Value> = n
            .alerts
            .iter()
            .map(|notice| {
                let a = &notice.alert;
                let mut labels = serde_json::Map::new();
                for (k, v) in &a.labels {
                    labels.insert(sanitize_label(k), v.clone().into());
                }
                labels.insert("alertname".into(), a.name.clone().into());
                labels.insert("severity".into(), level_name(a.level).into());
                labels
                    .entry("service")
                    .or_insert_with(|| self.service.clone().into());
                labels
                    .entry("environment")
                    .or_insert_with(|| self.environment.clone().into());
                let mut alert = serde_json::json!({
                    "labels": labels,
                    "annotations": {
                        "summary": a.summary,
                        "description": a.description,
                        "source": a.source,
                        "fingerprint": notice.fingerprint,
                        "count": notice.count.to_string(),
                    },
                });
                for (k, v) in &a.annotations {
                    if let Some(annotations) = alert["annotations"].as_object_mut() {
                        annotations
                            .entry(sanitize_label(k))
                            .or_insert_with(|| v.clone().into());
                    }
                }
                if let Some(start) = a.starts_at {
                    alert["startsAt"] = rfc3339(start).into();
                }
                if a.status == AlertStatus::Resolved {
                    let end = a.ends_at.unwrap_or_else(std::time::SystemTime::now);
                    alert["endsAt"] = rfc3339(end).into();
                }
                alert
            })
            .collect();
        serde_json::Value::Array(alerts)
    }
}

/// Alertmanager label names are `[a-zA-Z_][a-zA-Z0-9_]*`: other characters become `_`.
fn sanitize_label(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

impl AlertChannel for AlertmanagerChannel {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let request = self.client.post(self.url.expose());
            let request = json(request, &self.payload(n));
            send(request, "alertmanager", &self.host, &self.scrub).await?;
            Ok(())
        })
    }
}
