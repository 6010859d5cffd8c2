//! Which operator endpoint a method and path name, and what access it needs.

use crate::config::Config;

/// The prefix of qiflow's own pages and API.
pub const PREFIX: &str = "/qiflow";

/// One operator endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Metrics,
    Live,
    Ready,
    /// `GET /qiflow/` (and `/qiflow/api`) from a client that does not ask for HTML: what there
    /// is to see, as JSON.
    Index,
    /// `GET /qiflow/` from a browser: the dashboard page (no data in it).
    Page,
    /// `GET /qiflow/app.js`, `/qiflow/app.css`: the page's files.
    Asset(&'static str),
    /// `GET /qiflow/api/overview`: everything the dashboard shows.
    Overview,
    /// `GET /qiflow/api/jobs`: every job qiflow watches.
    Jobs,
    /// `GET /qiflow/api/deployments`: the last starts of the service.
    Deployments,
    /// `POST /qiflow/api/jobs/{name}/start|success|fail`: a check-in over HTTP.
    JobCheckIn(String, crate::jobs::CheckIn),
    Errors,
    Baselines,
    Alerts,
    Audit,
    CreateSilence,
    DeleteSilence(String),
    /// `GET /qiflow/api/loggers`: the log filter in force.
    Loggers,
    /// `PUT /qiflow/api/loggers`: a new log filter.
    SetLoggers,
    /// `GET /qiflow/api/audit/stats`: audit records counted by action and by actor.
    AuditStats,
    /// `GET /qiflow/api/authz`: roles, users and recent denials.
    Authz,
    /// `PUT /qiflow/api/authz/users/{id}`: an operator sets a user's roles.
    SetUserRoles(String),
    /// `DELETE /qiflow/api/authz/users/{id}`: the user's roles back to the configuration's.
    ResetUserRoles(String),
    /// A path under `/qiflow/` that names nothing.
    NotFound,
    /// A known path with another method: the methods it allows.
    WrongMethod(&'static str),
}

/// What an endpoint needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone (liveness; readiness status; `/metrics` with `public_metrics`).
    Public,
    /// A `read` token.
    Read,
    /// A `write` token; the request is audited.
    Write,
}

impl Endpoint {
    /// The `endpoint` label of `qiflow_admin_requests_total` (a fixed set).
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Metrics => "metrics",
            Self::Live => "health_live",
            Self::Ready => "health_ready",
            Self::Index => "index",
            Self::Page | Self::Asset(_) => "dashboard",
            Self::Overview => "overview",
            Self::Jobs => "jobs",
            Self::Deployments => "deployments",
            Self::JobCheckIn(..) => "job_checkin",
            Self::Errors => "errors",
            Self::Baselines => "baselines",
            Self::Alerts => "alerts",
            Self::Audit => "audit",
            Self::CreateSilence => "silence_create",
            Self::DeleteSilence(_) => "silence_delete",
            Self::Loggers => "loggers",
            Self::SetLoggers => "loggers_set",
            Self::AuditStats => "audit_stats",
            Self::Authz => "authz",
            Self::SetUserRoles(_) | Self::ResetUserRoles(_) => "authz_users_set",
            Self::NotFound | Self::WrongMethod(_) => "other",
        }
    }

    /// The audit action of a write.
    pub(crate) fn action(&self) -> Option<&'static str> {
        match self {
            Self::CreateSilence => Some("qiflow.silence.create"),
            Self::DeleteSilence(_) => Some("qiflow.silence.delete"),
            Self::SetLoggers => Some("qiflow.loggers.set"),
            // The change itself is the record (`authz.changed`, before and after); a refused
            // attempt is recorded under the same action.
            Self::SetUserRoles(_) | Self::ResetUserRoles(_) => Some("authz.changed"),
            Self::JobCheckIn(_, kind) => Some(kind.action()),
            _ => None,
        }
    }
}

/// The paths of the operator surface, from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Routes {
    /// `[metrics] path`, when metrics are served.
    metrics: Option<String>,
    /// `[admin] dashboard`.
    dashboard: bool,
    /// `[health] path` without a trailing `/` (`""` at the root).
    health: String,
    public_metrics: bool,
}

impl Routes {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            metrics: config.metrics.enabled.then(|| config.metrics.path.clone()),
            dashboard: config.admin.dashboard,
            health: config.health.path.trim_end_matches('/').to_owned(),
            public_metrics: config
                .admin
                .public_metrics
                .unwrap_or(config.health.token.is_none()),
        }
    }

    /// Whether `path` belongs to the operator surface.
    pub(crate) fn contains(&self, path: &str) -> bool {
        self.metrics.as_deref() == Some(path)
            || self.health_endpoint(path).is_some()
            || is_qiflow_path(path)
    }

    /// The health endpoint `path` names, if any.
    fn health_endpoint(&self, path: &str) -> Option<Endpoint> {
        match path.strip_prefix(self.health.as_str())? {
            "/live" => Some(Endpoint::Live),
            "/ready" => Some(Endpoint::Ready),
            "" => Some(Endpoint::Ready),
            "/" if self.health.is_empty() => Some(Endpoint::Ready),
            _ => None,
        }
    }

    /// The endpoint and the access it needs; `None` when `path` is not the operator surface's.
    pub(crate) fn resolve(&self, method: &str, path: &str) -> Option<(Endpoint, Access)> {
        let read = matches!(method, "GET" | "HEAD");
        if self.metrics.as_deref() == Some(path) {
            let access = if self.public_metrics {
                Access::Public
            } else {
                Access::Read
            };
            return Some(if read {
                (Endpoint::Metrics, access)
            } else {
                (Endpoint::WrongMethod("GET, HEAD"), access)
            });
        }
        if let Some(endpoint) = self.health_endpoint(path) {
            return Some(if read {
                (endpoint, Access::Public)
            } else {
                (Endpoint::WrongMethod("GET, HEAD"), Access::Public)
            });
        }
        if !is_qiflow_path(path) {
            return None;
        }
        let rest = path[PREFIX.len()..].trim_start_matches('/');
        let get = |endpoint| {
            if read {
                (endpoint, Access::Read)
            } else {
                (Endpoint::WrongMethod("GET, HEAD"), Access::Read)
            }
        };
        // The page's files: the same for every service, no data in them.
        let asset = |name| {
            if read {
                (Endpoint::Asset(name), Access::Public)
            } else {
                (Endpoint::WrongMethod("GET, HEAD"), Access::Public)
            }
        };
        Some(match rest.trim_end_matches('/') {
            "" | "api" => get(Endpoint::Index),
            "api/overview" if self.dashboard => get(Endpoint::Overview),
            "app.js" if self.dashboard => asset("app.js"),
            "app.css" if self.dashboard => asset("app.css"),
            "api/errors" => get(Endpoint::Errors),
            "api/baselines" => get(Endpoint::Baselines),
            "api/alerts" => get(Endpoint::Alerts),
            "api/audit" => get(Endpoint::Audit),
            "api/audit/stats" => get(Endpoint::AuditStats),
            "api/authz" => get(Endpoint::Authz),
            "api/loggers" if method == "PUT" => (Endpoint::SetLoggers, Access::Write),
            "api/loggers" if read => (Endpoint::Loggers, Access::Read),
            "api/loggers" => (Endpoint::WrongMethod("GET, HEAD, PUT"), Access::Read),
            "api/alerts/silences" if method == "POST" => (Endpoint::CreateSilence, Access::Write),
            "api/alerts/silences" => (Endpoint::WrongMethod("POST"), Access::Read),
            "api/jobs" => get(Endpoint::Jobs),
            "api/deployments" => get(Endpoint::Deployments),
            other if other.starts_with("api/authz/users/") => {
                let id = &other["api/authz/users/".len()..];
                if id.is_empty() || id.contains('/') {
                    (Endpoint::NotFound, Access::Read)
                } else if method == "PUT" {
                    (Endpoint::SetUserRoles(id.to_owned()), Access::Write)
                } else if method == "DELETE" {
                    (Endpoint::ResetUserRoles(id.to_owned()), Access::Write)
                } else {
                    (Endpoint::WrongMethod("PUT, DELETE"), Access::Read)
                }
            }
            other if other.starts_with("api/jobs/") => {
                let rest = &other["api/jobs/".len()..];
                match rest
                    .rsplit_once('/')
                    .and_then(|(name, kind)| Some((name, crate::jobs::CheckIn::parse(kind)?)))
                {
                    Some((name, kind)) if !name.is_empty() && !name.contains('/') => {
                        if method == "POST" {
                            (Endpoint::JobCheckIn(name.to_owned(), kind), Access::Write)
                        } else {
                            (Endpoint::WrongMethod("POST"), Access::Read)
                        }
                    }
                    _ => (Endpoint::NotFound, Access::Read),
                }
            }
            other => match other.strip_prefix("api/alerts/silences/") {
                Some(id) if !id.is_empty() && !id.contains('/') => {
                    if method == "DELETE" {
                        (Endpoint::DeleteSilence(id.to_owned()), Access::Write)
                    } else {
                        (Endpoint::WrongMethod("DELETE"), Access::Read)
                    }
                }
                _ => (Endpoint::NotFound, Access::Read),
            },
        })
    }
}

impl Routes {
    /// [`Routes::resolve`], and `GET /qiflow/` from a browser (its `Accept` names `text/html`)
    /// is the dashboard page: it holds no data, and without a token it asks for one. Other
    /// clients get the JSON index (with a token) or the `401` that says how to get in.
    pub(crate) fn resolve_request(
        &self,
        method: &str,
        path: &str,
        accept: Option<&str>,
    ) -> Option<(Endpoint, Access)> {
        let resolved = self.resolve(method, path)?;
        let wants_html = accept.is_some_and(|a| a.contains("text/html"));
        let root = path.trim_end_matches('/') == PREFIX;
        Some(match resolved {
            (Endpoint::Index, _) if self.dashboard && wants_html && root => {
                (Endpoint::Page, Access::Public)
            }
            other => other,
        })
    }
}

/// `/qiflow` or anything under `/qiflow/`.
fn is_qiflow_path(path: &str) -> bool {
    path.strip_prefix(PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Routes {
        Routes::new(&Config::default())
    }

    #[test]
    fn paths_resolve_to_their_endpoint_and_access() {
        let r = routes();
        let cases = [
            ("GET", "/metrics", Endpoint::Metrics, Access::Public),
            ("GET", "/health/live", Endpoint::Live, Access::Public),
            ("HEAD", "/health/ready", Endpoint::Ready, Access::Public),
            ("GET", "/health", Endpoint::Ready, Access::Public),
            ("GET", "/qiflow", Endpoint::Index, Access::Read),
            ("GET", "/qiflow/", Endpoint::Index, Access::Read),
            ("GET", "/qiflow/api/errors", Endpoint::Errors, Access::Read),
            ("GET", "/qiflow/api/audit", Endpoint::Audit, Access::Read),
            (
                "POST",
                "/qiflow/api/alerts/silences",
                Endpoint::CreateSilence,
                Access::Write,
            ),
            (
                "DELETE",
                "/qiflow/api/alerts/silences/abc",
                Endpoint::DeleteSilence("abc".into()),
                Access::Write,
            ),
            (
                "GET",
                "/qiflow/api/alerts/silences",
                Endpoint::WrongMethod("POST"),
                Access::Read,
            ),
            (
                "GET",
                "/qiflow/api/loggers",
                Endpoint::Loggers,
                Access::Read,
            ),
            (
                "HEAD",
                "/qiflow/api/loggers/",
                Endpoint::Loggers,
                Access::Read,
            ),
            (
                "PUT",
                "/qiflow/api/loggers",
                Endpoint::SetLoggers,
                Access::Write,
            ),
            (
                "POST",
                "/qiflow/api/loggers",
                Endpoint::WrongMethod("GET, HEAD, PUT"),
                Access::Read,
            ),
            (
                "POST",
                "/qiflow/api/errors",
                Endpoint::WrongMethod("GET, HEAD"),
                Access::Read,
            ),
            (
                "GET",
                "/qiflow/api/nothing",
                Endpoint::NotFound,
                Access::Read,
            ),
            ("GET", "/qiflow/x/y", Endpoint::NotFound, Access::Read),
            ("GET", "/qiflow/api/authz", Endpoint::Authz, Access::Read),
            (
                "GET",
                "/qiflow/api/audit/stats",
                Endpoint::AuditStats,
                Access::Read,
            ),
            (
                "PUT",
                "/qiflow/api/authz/users/demo",
                Endpoint::SetUserRoles("demo".into()),
                Access::Write,
            ),
            (
                "DELETE",
                "/qiflow/api/authz/users/demo",
                Endpoint::ResetUserRoles("demo".into()),
                Access::Write,
            ),
            (
                "GET",
                "/qiflow/api/authz/users/demo",
                Endpoint::WrongMethod("PUT, DELETE"),
                Access::Read,
            ),
            (
                "PUT",
                "/qiflow/api/authz/users/a/b",
                Endpoint::NotFound,
                Access::Read,
            ),
        ];
        for (method, path, endpoint, access) in cases {
            assert_eq!(
                r.resolve(method, path),
                Some((endpoint, access)),
                "{method} {path}"
            );
        }
        for path in [
            "/",
            "/hello",
            "/qiflowx",
            "/metrics/x",
            "/healthz",
            "/health/x",
        ] {
            assert_eq!(r.resolve("GET", path), None, "{path}");
            assert!(!r.contains(path), "{path}");
        }
        assert!(r.contains("/qiflow/api/anything"));
    }

    #[test]
    fn metrics_need_a_token_when_not_public() {
        let mut config = Config::default();
        config.admin.public_metrics = Some(false);
        assert_eq!(
            Routes::new(&config).resolve("GET", "/metrics"),
            Some((Endpoint::Metrics, Access::Read))
        );
        // The older `[health] token` closed `/metrics`, and still does unless told otherwise.
        let mut config = Config::default();
        config.health.token = Some("t".repeat(32).into());
        assert_eq!(
            Routes::new(&config).resolve("GET", "/metrics").unwrap().1,
            Access::Read
        );
        config.admin.public_metrics = Some(true);
        assert_eq!(
            Routes::new(&config).resolve("GET", "/metrics").unwrap().1,
            Access::Public
        );
        // Metrics off: the path is not an endpoint.
        let mut config = Config::default();
        config.metrics.enabled = false;
        assert_eq!(Routes::new(&config).resolve("GET", "/metrics"), None);
    }

    #[test]
    fn a_health_path_at_the_root_works() {
        let mut config = Config::default();
        config.health.path = "/".into();
        let r = Routes::new(&config);
        assert_eq!(r.resolve("GET", "/live").unwrap().0, Endpoint::Live);
        assert_eq!(r.resolve("GET", "/").unwrap().0, Endpoint::Ready);
    }
}
