//! Automatic auditing by the middleware: requests whose method and route match `[audit] routes`
//! are audited when their response head is ready, without handler code.
//!
//! A rule is `"METHOD ROUTE"`: the method (or `*` for any), a space, and the route template as
//! the framework names it (`/users/{id}` in axum, `/users/{id}` in actix), or a prefix ending in
//! `*` (`/admin/*`), or `*` alone. Examples: `"POST /login"`, `"DELETE *"`, `"* /admin/*"`.
//!
//! The event: actor from the configured source (the `[audit] actor_header` header, or the
//! closure given to [`ObserverBuilder::audit_actor`](crate::ObserverBuilder::audit_actor);
//! `"anonymous"` when neither yields one), action `"<METHOD> <route>"`, resource the raw path,
//! outcome from the status (401/403 `denied`, 5xx `failure`, else `success`), the request id,
//! and metadata `{"status": …}`.

use std::sync::Arc;

use super::{AuditEvent, Outcome};
use crate::request::RequestInfo;
use crate::scope::RequestId;

/// Resolves the actor of an automatically audited request. It receives a header lookup
/// (`lookup("authorization")`), and returns the actor, or `None` for `"anonymous"`.
pub type ActorFn = Arc<dyn Fn(&dyn Fn(&str) -> Option<String>) -> Option<String> + Send + Sync>;

/// Where the actor of an automatically audited request comes from.
#[derive(Clone)]
#[non_exhaustive]
pub enum ActorSource {
    /// Nobody: every actor is `"anonymous"`.
    None,
    /// The value of this request header (e.g. `x-user`, set by an authenticating proxy).
    Header(String),
    /// A closure of the host's (e.g. decoding a session cookie or a JWT subject).
    Custom(ActorFn),
}

impl std::fmt::Debug for ActorSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Header(h) => f.debug_tuple("Header").field(h).finish(),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    method: Option<String>,
    route: RoutePattern,
}

#[derive(Debug, Clone)]
enum RoutePattern {
    Any,
    Exact(String),
    Prefix(String),
}

/// The compiled `[audit] routes` rules and the actor source.
#[derive(Debug, Clone)]
pub struct AutoAudit {
    rules: Vec<Rule>,
    actor: ActorSource,
}

impl AutoAudit {
    /// Compiles rules like `"POST /login"`; an error names the bad rule.
    pub fn new(rules: &[String], actor: ActorSource) -> Result<Self, String> {
        let mut compiled = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let Some((method, route)) = rule.trim().split_once(' ') else {
                return Err(format!(
                    "audit.routes[{i}]: {rule:?} is not \"METHOD ROUTE\"; write e.g. \"POST /login\" or \"* /admin/*\""
                ));
            };
            let method = method.trim();
            let route = route.trim();
            if method.is_empty() || route.is_empty() {
                return Err(format!(
                    "audit.routes[{i}]: {rule:?} is not \"METHOD ROUTE\""
                ));
            }
            compiled.push(Rule {
                method: (method != "*").then(|| method.to_ascii_uppercase()),
                route: if route == "*" {
                    RoutePattern::Any
                } else if let Some(prefix) = route.strip_suffix('*') {
                    RoutePattern::Prefix(prefix.to_owned())
                } else {
                    RoutePattern::Exact(route.to_owned())
                },
            });
        }
        Ok(Self {
            rules: compiled,
            actor,
        })
    }

    /// Whether a request with `method` and route template `route` (the raw path when the
    /// framework matched no route) is audited.
    pub fn matches(&self, method: &str, route: &str) -> bool {
        self.rules.iter().any(|r| {
            r.method.as_deref().is_none_or(|m| m == method)
                && match &r.route {
                    RoutePattern::Any => true,
                    RoutePattern::Exact(e) => e == route,
                    RoutePattern::Prefix(p) => route.starts_with(p.as_str()),
                }
        })
    }

    /// The actor, resolved by adapters from the request headers when the request starts.
    pub fn actor(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Option<String> {
        match &self.actor {
            ActorSource::None => None,
            ActorSource::Header(h) => lookup(h),
            ActorSource::Custom(f) => f(lookup),
        }
    }

    /// Whether the actor comes from request headers (adapters then call [`AutoAudit::actor`]).
    pub fn needs_headers(&self) -> bool {
        !matches!(self.actor, ActorSource::None)
    }

    /// Whether an adapter should resolve the actor of this request: it is audited and the actor
    /// comes from its headers. Other requests pay no header lookup.
    pub fn wants_actor(&self, info: &RequestInfo<'_>) -> bool {
        self.needs_headers()
            && self.matches(&info.method, info.route.as_deref().unwrap_or(&info.path))
    }
}

/// A request that will be audited when it finishes (held by
/// [`InFlight`](crate::request::InFlight)).
#[derive(Debug)]
pub(crate) struct PendingAudit {
    actor: String,
    action: String,
    resource: String,
}

impl PendingAudit {
    /// The decision when a request starts: `Some` when auto-audit is on and the request
    /// matches a rule. Costs one `Option` check when auto-audit is off.
    pub(crate) fn begin(observer: &crate::Observer, info: &RequestInfo<'_>) -> Option<Box<Self>> {
        let auto = observer.auditor()?.auto()?;
        let route = info.route.as_deref().unwrap_or(&info.path);
        if !auto.matches(&info.method, route) {
            return None;
        }
        Some(Box::new(Self {
            actor: info.actor.clone().unwrap_or_else(|| "anonymous".to_owned()),
            action: format!("{} {route}", info.method),
            resource: info.path.to_string(),
        }))
    }

    /// Writes the event when the response head is ready (or the handler panicked: 500).
    pub(crate) fn finish(self, observer: &crate::Observer, status: u16, request: &RequestId) {
        let event = AuditEvent::builder(self.actor, self.action)
            .resource(self.resource)
            .outcome(Outcome::from_status(status))
            .request_id(request.as_str())
            .trace_id(request.trace().trace_id())
            .metadata("status", status)
            .metadata("auto", true)
            .build();
        // A loss is counted, logged and reported by `audit` itself.
        let _ = observer.audit(event);
    }

    /// Writes the event of a request that never got its response head: the client went away
    /// (or the server dropped the request) while it ran. Outcome `aborted`: the handler may
    /// have done part of its work, and the trail must say the request was there.
    pub(crate) fn abort(self, observer: &crate::Observer, request: &RequestId, latency_ms: f64) {
        let event = AuditEvent::builder(self.actor, self.action)
            .resource(self.resource)
            .outcome(Outcome::Aborted)
            .request_id(request.as_str())
            .trace_id(request.trace().trace_id())
            .metadata("auto", true)
            .metadata("reason", "client disconnected before the response")
            .metadata("latency_ms", latency_ms)
            .build();
        // A loss is counted, logged and reported by `audit` itself.
        let _ = observer.audit(event);
    }
}
