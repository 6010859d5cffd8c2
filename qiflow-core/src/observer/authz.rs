//! [`Observer::authorize`]: the permission check and its record in one call; the policy's
//! changes (reload, operators' changes), each audited as `authz.changed`.

use std::sync::Arc;

use super::Observer;
use crate::alert::{Alert, AlertLevel};
use crate::audit::{AuditEvent, AuditEventBuilder, Outcome};
use crate::authz::live::{Change, Denial};
use crate::authz::{Decision, Permission, Policy, PolicyError, Principal, Refusal};
use crate::config::AuthzConfig;
use crate::request::RequestInfo;

impl Observer {
    /// Whether `principal` holds `permission`, for the request `request`: the one check behind
    /// every guard (`qiflow_tower::RequireLayer`, `qiflow_axum::require`,
    /// `qiflow_actix::Require`), and what a handler calls for a check that depends on the
    /// resource (an order owned by another user).
    ///
    /// A grant is a few hash lookups and one atomic add, with no lock and no allocation
    /// (audited only under `[authz] audit_grants`). A denial is recorded: an audit record
    /// `authz.denied` (actor, permission, route, method, request and trace ids; through the
    /// audit pipeline with its guarantees), a `qiflow::authz` log line, the recent denials of
    /// `GET /qiflow/api/authz`, and the actor's window for `[authz.denial_alert]`. Both count on
    /// `qiflow_authz_decisions_total{decision,permission}`.
    ///
    /// ```
    /// use qiflow_core::authz::{Decision, Permission, Principal};
    /// use qiflow_core::request::RequestInfo;
    ///
    /// let mut config = qiflow_core::test::quiet_config();
    /// config.authz = qiflow_core::config::Loader::new()
    ///     .toml_str("[authz.roles.viewer]\npermissions = [\"orders:read\"]\n")
    ///     .load()
    ///     .unwrap()
    ///     .authz;
    /// let (observer, _guard) = qiflow_core::Observer::builder(config)
    ///     .install_global(false)
    ///     .build()
    ///     .unwrap();
    /// let read = Permission::parse("orders:read").unwrap();
    /// let write = Permission::parse("orders:write").unwrap();
    /// let ada = Principal::new("ada").role("viewer");
    /// let request = RequestInfo::new("POST", "/orders/7");
    /// assert_eq!(observer.authorize(&ada, &read, &request), Decision::Granted);
    /// assert_eq!(observer.authorize(&ada, &write, &request), Decision::Denied);
    /// assert_eq!(observer.authz_denials()[0].permission, "orders:write");
    /// ```
    pub fn authorize(
        &self,
        principal: &Principal,
        permission: &Permission,
        request: &RequestInfo<'_>,
    ) -> Decision {
        let live = &self.inner.authz;
        let decision = live.decide(principal, permission);
        match decision {
            Decision::Granted => {
                if live.audits_grant(&request.method) {
                    let event = self
                        .decision_event(principal, permission, request, "authz.granted")
                        .outcome(Outcome::Success)
                        .build();
                    // A loss is counted, logged and reported by `audit` itself.
                    let _ = self.audit(event);
                }
            }
            Decision::Denied => self.denied(principal, permission, request),
        }
        decision
    }

    /// The whole check a guard makes, answered once for every stack: no principal is a refusal
    /// with `401` (counted by [`authorize_unauthenticated`](Self::authorize_unauthenticated)), a
    /// principal without `permission` one with `[authz] deny_status` (recorded by
    /// [`authorize`](Self::authorize)); both carry the JSON body of
    /// [`refusal_body`](crate::authz::refusal_body). `Ok` lets the request through.
    pub fn guard(
        &self,
        principal: Option<&Principal>,
        permission: &Permission,
        request: &RequestInfo<'_>,
    ) -> Result<(), Refusal> {
        let authenticated = match principal {
            None => {
                self.authorize_unauthenticated(permission, request);
                false
            }
            Some(principal) => {
                if self.authorize(principal, permission, request).is_granted() {
                    return Ok(());
                }
                true
            }
        };
        Err(Refusal {
            status: if authenticated {
                self.deny_status()
            } else {
                401
            },
            body: crate::authz::refusal_body(permission, authenticated),
        })
    }

    /// Counts a check that found no principal (what the guards answer 401):
    /// `qiflow_authz_decisions_total{decision="unauthenticated"}`. Not audited: it names no one,
    /// and a stranger's scan would fill the trail.
    pub fn authorize_unauthenticated(&self, permission: &Permission, request: &RequestInfo<'_>) {
        self.inner.authz.count_unauthenticated(permission);
        tracing::debug!(
            target: "qiflow::authz",
            permission = permission.as_str(),
            method = %request.method,
            route = route_of(request),
            "no principal: unauthenticated"
        );
    }

    /// Warns (at `qiflow::authz`) when no role of the policy in force grants `permission`: a
    /// guard requiring it would refuse every request. The guards call it when they are built.
    pub fn warn_if_ungrantable(&self, permission: &Permission) {
        if !self.inner.authz.policy().grantable(permission) {
            tracing::warn!(
                target: "qiflow::authz",
                permission = permission.as_str(),
                "no role in [authz] grants this permission: every request that requires it will be refused; grant it to a role, or check its spelling"
            );
        }
    }

    /// The status a guard answers a principal without the permission (`[authz] deny_status`).
    pub fn deny_status(&self) -> u16 {
        self.inner.authz.deny_status()
    }

    /// The policy in force (a snapshot: a later change does not alter it).
    pub fn authz_policy(&self) -> Arc<Policy> {
        self.inner.authz.policy()
    }

    /// The recent denials, newest first (at most
    /// [`RECENT_DENIALS`](crate::authz::RECENT_DENIALS)).
    pub fn authz_denials(&self) -> Vec<Denial> {
        self.inner.authz.recent()
    }

    /// Replaces the roles and users of the policy with `config`'s, atomically: the next check
    /// decides under the new policy, checks in progress finish under the old one. The roles
    /// operators set through `PUT /qiflow/api/authz/users/{id}` stay on top. A policy that does
    /// not compile changes nothing and names its key paths. The change is an audit record
    /// (`authz.changed`, actor `qiflow`, before and after); when the trail cannot take it, the
    /// change is undone and the error says so. A `SIGHUP` does this with `[authz]` re-read from
    /// [`Config::source`](crate::Config::source) (when `init` installed qiflow globally).
    pub fn reload_authz(&self, config: &AuthzConfig) -> Result<(), PolicyError> {
        self.reload_authz_by(config, "qiflow", "reload")
    }

    pub(crate) fn reload_authz_by(
        &self,
        config: &AuthzConfig,
        actor: &str,
        how: &str,
    ) -> Result<(), PolicyError> {
        let live = &self.inner.authz;
        let (change, previous) = live.reload(config)?;
        if change.before == change.after {
            return Ok(());
        }
        let event = changed_event(actor, "authz/policy", &change)
            .metadata("how", how.to_owned())
            .build();
        if let Err(e) = self.audit(event) {
            live.restore_config(previous);
            return Err(PolicyError::single(
                "authz",
                format!("the audit trail could not record the change, so nothing changed: {e}"),
            ));
        }
        tracing::warn!(target: "qiflow::authz", actor, how, "authz policy reloaded");
        Ok(())
    }

    /// Sets (`Some`) or gives back to the configuration (`None`) the roles of `user`, as an
    /// operator's change: audited as `authz.changed` by `actor` (undone when the trail cannot
    /// take the record), kept in `[service] state_dir` across restarts. Returns the change.
    pub(crate) fn set_user_roles(
        &self,
        user: &str,
        roles: Option<Vec<String>>,
        actor: &str,
        request_id: Option<&str>,
    ) -> Result<serde_json::Value, (u16, String)> {
        let live = &self.inner.authz;
        let (change, previous) = live.set_user(user, roles).map_err(|e| (400, e))?;
        let mut event = changed_event(actor, &format!("authz/users/{user}"), &change);
        if let Some(id) = request_id {
            event = event.request_id(id);
        }
        if let Err(e) = self.audit(event.build()) {
            live.restore(previous);
            return Err((
                503,
                format!(
                    "the audit trail could not record this change, so nothing was changed: {e}"
                ),
            ));
        }
        tracing::warn!(
            target: "qiflow::authz",
            actor,
            user,
            before = %change.before["roles"],
            after = %change.after["roles"],
            "user roles changed"
        );
        Ok(change.after)
    }

    /// What `GET /qiflow/api/authz` shows: the roles with their effective permissions, the
    /// users' roles (the configuration's and the operators'), the settings and the recent
    /// denials.
    pub(crate) fn authz_view(&self) -> serde_json::Value {
        let live = &self.inner.authz;
        let policy = live.policy();
        let authz = &self.config().authz;
        serde_json::json!({
            "roles": policy.roles(),
            "users": policy.users(),
            "changed_users": live.overrides(),
            "audit_grants": authz.audit_grants,
            "deny_status": authz.deny_status,
            "denial_alert": {
                "count": authz.denial_alert.count,
                "window_seconds": authz.denial_alert.window.as_secs(),
            },
            "recent_denials": live.recent(),
        })
    }

    /// Records a denial: audit record, log line, recent list, and the alert of a burst.
    fn denied(&self, principal: &Principal, permission: &Permission, request: &RequestInfo<'_>) {
        let route = route_of(request);
        let scope = crate::scope::current();
        let request_id = scope
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .or_else(|| request.request_id.as_deref().map(str::to_owned));
        tracing::info!(
            target: "qiflow::authz",
            actor = %principal.id,
            permission = permission.as_str(),
            method = %request.method,
            route,
            "permission denied"
        );
        let event = self
            .decision_event(principal, permission, request, "authz.denied")
            .outcome(Outcome::Denied)
            .build();
        // A loss is counted, logged and reported by `audit` itself.
        let _ = self.audit(event);
        let now = self.clock().now();
        let denial = Denial {
            at: crate::alert::rfc3339(now),
            actor: principal.id.clone(),
            permission: permission.as_str().to_owned(),
            method: request.method.to_string(),
            route: route.to_owned(),
            request_id,
        };
        if let Some(count) = self.inner.authz.denied(denial, now) {
            let window = self.config().authz.denial_alert.window;
            self.alert(
                Alert::new("authz_denials", AlertLevel::Warning)
                    .summary(format!(
                        "{count} permission denials of {:?} within {}",
                        principal.id,
                        crate::config::units::format_duration(window)
                    ))
                    .description(format!(
                        "the latest: {} {} needs {}; a client probing for access, or one broken since a permission change (see GET /qiflow/api/authz)",
                        request.method,
                        route,
                        permission.as_str()
                    ))
                    .label("actor", principal.id.clone())
                    .fingerprint(fingerprint(&principal.id))
                    .source("authz"),
            );
        }
    }

    /// The audit event of a decision: actor, permission, route, method, request and trace ids.
    fn decision_event(
        &self,
        principal: &Principal,
        permission: &Permission,
        request: &RequestInfo<'_>,
        action: &str,
    ) -> AuditEventBuilder {
        let mut event = AuditEvent::builder(principal.id.clone(), action)
            .resource(permission.as_str().to_owned())
            .metadata("permission", permission.as_str().to_owned())
            .metadata("method", request.method.to_string())
            .metadata("route", route_of(request).to_owned())
            .metadata("path", request.path.to_string());
        if !principal.roles.is_empty() {
            event = event.metadata("roles", serde_json::json!(principal.roles));
        }
        match crate::scope::current() {
            Some(id) => {
                event = event
                    .request_id(id.as_str())
                    .trace_id(id.trace().trace_id());
            }
            None => {
                if let Some(id) = request
                    .request_id
                    .as_deref()
                    .filter(|id| crate::request::is_sane_request_id(id))
                {
                    event = event.request_id(id);
                }
            }
        }
        event
    }
}

/// The route template, or the path when the framework gave none.
fn route_of<'a>(request: &'a RequestInfo<'_>) -> &'a str {
    request.route.as_deref().unwrap_or(&request.path)
}

/// The fingerprint of an actor's denial alert.
pub(crate) fn fingerprint(actor: &str) -> String {
    format!("authz_denials:{actor}")
}

/// The audit event of a policy change.
fn changed_event(actor: &str, resource: &str, change: &Change) -> AuditEventBuilder {
    AuditEvent::builder(actor.to_owned(), "authz.changed")
        .resource(resource.to_owned())
        .outcome(Outcome::Success)
        .metadata("before", change.before.clone())
        .metadata("after", change.after.clone())
}

/// On `SIGHUP`, re-reads `[authz]` from the configuration's file
/// ([`Config::source`](crate::Config::source)) and puts it in force with
/// [`Observer::reload_authz`] (audited, actor `qiflow`). A file that no longer loads changes
/// nothing and is logged at error. Installed by `init` when the configuration came from a file:
/// the signal handler is process-wide.
pub(super) fn reload_on_sighup(observer: &Observer) {
    let Some(source) = observer.config().source().map(std::path::Path::to_path_buf) else {
        return;
    };
    // Weak: the task runs on the observer's own runtime and must not keep it alive.
    let weak = Arc::downgrade(&observer.inner);
    observer.runtime().spawn(async move {
        let mut hangups =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(signal) => signal,
                Err(e) => {
                    tracing::warn!(target: "qiflow::authz", "cannot listen for SIGHUP, so [authz] reloads only through the API: {e}");
                    return;
                }
            };
        while hangups.recv().await.is_some() {
            let Some(inner) = weak.upgrade() else {
                return;
            };
            let observer = Observer { inner };
            let file = source.display();
            match crate::config::Loader::new().file(&source).load() {
                Ok(config) => match observer.reload_authz_by(&config.authz, "qiflow", "SIGHUP") {
                    Ok(()) => {
                        tracing::info!(target: "qiflow::authz", %file, "SIGHUP: [authz] reloaded (other sections need a restart)");
                    }
                    Err(e) => {
                        tracing::error!(target: "qiflow::authz", %file, "SIGHUP: [authz] not reloaded, the policy in force stays: {e}");
                    }
                },
                Err(e) => {
                    tracing::error!(target: "qiflow::authz", %file, "SIGHUP: the configuration does not load, the policy in force stays: {e}");
                }
            }
        }
    });
}
