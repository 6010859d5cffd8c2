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
/// With several (`url` and `urls`: every Alertmanager of a cluster), each notification goes to
/// every one at once, as Prometheus sends: the cluster's gossip makes one of them notify. The send
/// counts as delivered when at least one accepted it; the ones that failed are logged at
/// `qiflow::alert` with their host. When all fail, the error is the first one's (retried as
/// usual).
///
/// Each alert becomes `{"labels":{"alertname","severity","service","environment",<labels>},
/// "annotations":{"summary","description","source","fingerprint","count",<annotations>},
/// "startsAt"}`; a
/// resolved alert also has `endsAt`, which resolves it in Alertmanager. Alertmanager then
/// applies its own routing, grouping and inhibition.
///
/// Built with qiflow-core's `http-channels` feature (on by default).
pub struct AlertmanagerChannel {
    targets: Vec<Target>,
    service: String,
    environment: String,
    client: reqwest::Client,
}

/// One Alertmanager.
struct Target {
    url: Secret,
    host: String,
    scrub: Scrubber,
}

/// Only the hosts: the URLs may carry credentials (`https://user:password@…`).
impl std::fmt::Debug for AlertmanagerChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertmanagerChannel")
            .field(
                "hosts",
                &self.targets.iter().map(|t| &t.host).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl AlertmanagerChannel {
    /// A channel to every Alertmanager of `urls` (checked at load: at least one).
    pub(super) fn new(urls: &[Secret], config: &Config, client: reqwest::Client) -> Self {
        let targets = urls
            .iter()
            .map(|url| {
                let trimmed = url.expose().trim_end_matches('/');
                let url = Secret::new(if trimmed.ends_with("/api/v2/alerts") {
                    trimmed.to_owned()
                } else {
                    format!("{trimmed}/api/v2/alerts")
                });
                Target {
                    host: host_of(url.expose()),
                    scrub: Scrubber::new().url(url.expose()),
                    url,
                }
            })
            .collect();
        Self {
            targets,
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
                // Each instance's alert is its own in Alertmanager (the labels are the
                // fingerprint); a route whose `group_by` leaves `instance` out groups them.
                if !n.instance.is_empty() {
                    labels
                        .entry("instance")
                        .or_insert_with(|| n.instance.clone().into());
                }
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
            let payload = self.payload(n);
            let sends = self.targets.iter().map(|target| {
                let request = json(self.client.post(target.url.expose()), &payload);
                send(request, "alertmanager", &target.host, &target.scrub)
            });
            let results = futures_util::future::join_all(sends).await;
            let mut first_error = None;
            let mut delivered = false;
            for (target, result) in self.targets.iter().zip(results) {
                match result {
                    Ok(_) => delivered = true,
                    Err(e) => {
                        if self.targets.len() > 1 {
                            tracing::warn!(target: "qiflow::alert", alertmanager = %target.host, "an Alertmanager of the cluster refused the alerts: {e}");
                        }
                        first_error.get_or_insert(e);
                    }
                }
            }
            match first_error {
                Some(e) if !delivered => Err(e),
                _ => Ok(()),
            }
        })
    }
}
