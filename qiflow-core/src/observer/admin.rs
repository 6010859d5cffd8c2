//! [`Observer::admin`]: the operator surface's endpoints, each answered by the capability that
//! owns the data, once [`Gate::admit`](crate::admin) let the request through.

use std::time::Instant;

use super::Observer;
use crate::admin::{AdminRequest, AdminResponse, Admitted, Caller, Endpoint, Refused};
use crate::audit::{AuditErrorKind, AuditEvent, Outcome};

/// The content type of the Prometheus text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// What `GET /qiflow/` lists.
const ENDPOINTS: &[&str] = &[
    "GET /qiflow/ (the dashboard, in a browser)",
    "GET /qiflow/api/overview",
    "GET /qiflow/api/errors",
    "GET /qiflow/api/baselines",
    "GET /qiflow/api/alerts",
    "GET /qiflow/api/audit",
    "GET /qiflow/api/audit/stats",
    "GET /qiflow/api/authz",
    "PUT /qiflow/api/authz/users/{id}",
    "DELETE /qiflow/api/authz/users/{id}",
    "POST /qiflow/api/alerts/silences",
    "DELETE /qiflow/api/alerts/silences/{id}",
    "GET /qiflow/api/loggers",
    "PUT /qiflow/api/loggers",
    "GET /qiflow/api/jobs",
    "GET /qiflow/api/deployments",
    "POST /qiflow/api/jobs/{name}/start|success|fail",
];

impl Observer {
    /// Answers a request to the operator surface (see [`crate::admin`] for who may see what):
    /// `/metrics`, the health endpoints, `/qiflow/` and `/qiflow/api/*`. Adapters send every
    /// path for which [`Observer::is_admin_path`] holds here, and turn the answer into their
    /// framework's response. Never panics; runs its I/O (health checks, audit queries) on
    /// qiflow's runtime, so it works under any executor.
    ///
    /// ```
    /// use qiflow_core::admin::AdminRequest;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let (observer, _guard) = qiflow_core::Observer::builder(qiflow_core::test::quiet_config())
    ///     .install_global(false)
    ///     .build()
    ///     .unwrap();
    /// // Without a token: health answers its status only, the API refuses.
    /// let health = observer.admin(AdminRequest::new("GET", "/health/ready")).await;
    /// assert_eq!(health.text(), r#"{"status":"healthy"}"#);
    /// let errors = observer.admin(AdminRequest::new("GET", "/qiflow/api/errors")).await;
    /// assert_eq!(errors.status(), 401);
    /// // With the test token (`quiet_config` configures it with the write scope):
    /// let errors = observer
    ///     .admin(AdminRequest::new("GET", "/qiflow/api/errors").header(
    ///         "authorization",
    ///         format!("Bearer {}", qiflow_core::test::ADMIN_TOKEN),
    ///     ))
    ///     .await;
    /// assert_eq!(errors.status(), 200);
    /// # });
    /// ```
    pub async fn admin(&self, request: AdminRequest) -> AdminResponse {
        let started = Instant::now();
        let gate = &self.inner.admin;
        let (endpoint, caller, response) = match gate.admit(&request) {
            Ok(admitted) => {
                let response = self.answer(&admitted, &request).await;
                (admitted.endpoint, admitted.caller, response)
            }
            Err(Refused {
                endpoint,
                caller,
                response,
            }) => {
                if response.status() == 403 && endpoint.action().is_some() {
                    // A token that may not write tried to: a denial, on the record.
                    let _ = self.audit(
                        self.admin_event(&caller, &endpoint, &request, Outcome::Denied)
                            .metadata("error", "the token has the read scope")
                            .build(),
                    );
                }
                (endpoint, caller, response)
            }
        };
        gate.record(
            &request,
            &endpoint,
            &caller,
            response.status(),
            started.elapsed(),
        );
        response
    }

    /// Whether `path` belongs to the operator surface ([`Observer::admin`]): `[metrics] path`
    /// (when metrics are on), the health paths, `/qiflow` and everything under `/qiflow/`. The
    /// middleware does not observe these, so scrapes and probes do not skew the figures.
    pub fn is_admin_path(&self, path: &str) -> bool {
        self.inner.admin.contains(path)
    }

    async fn answer(&self, admitted: &Admitted, request: &AdminRequest) -> AdminResponse {
        let response = match &admitted.endpoint {
            Endpoint::Metrics => {
                AdminResponse::new(200, METRICS_CONTENT_TYPE, self.render_metrics())
            }
            Endpoint::Live => {
                let report = self.liveness();
                AdminResponse::json(report.http_status(), report.to_json())
            }
            Endpoint::Ready => {
                let report = self.readiness().await;
                let body = if admitted.details {
                    report.to_json()
                } else {
                    report.summary()
                };
                AdminResponse::json(report.http_status(), body)
            }
            Endpoint::Index => AdminResponse::json(
                200,
                serde_json::json!({
                    "service": self.config().service.name,
                    "caller": admitted.caller.name(),
                    "scope": admitted.caller.scope().map(|s| s.as_str()),
                    "endpoints": ENDPOINTS,
                })
                .to_string(),
            )
            .with_header("vary", "accept"),
            // `/qiflow/` is the page or the JSON index by `Accept`: caches must keep them apart.
            Endpoint::Page => crate::dashboard::assets::INDEX
                .respond(
                    request.header_value("if-none-match"),
                    request.header_value("accept-encoding"),
                )
                .with_header("vary", "accept"),
            Endpoint::Asset(name) => match crate::dashboard::assets::named(name) {
                Some(asset) => asset.respond(
                    request.header_value("if-none-match"),
                    request.header_value("accept-encoding"),
                ),
                None => AdminResponse::error(404, &format!("no file {name}")),
            },
            Endpoint::Overview => self.overview(admitted).await,
            Endpoint::Jobs => match serde_json::to_string(&self.jobs().view()) {
                Ok(body) => AdminResponse::json(200, body),
                Err(e) => AdminResponse::error(500, &format!("cannot serialize the jobs: {e}")),
            },
            Endpoint::JobCheckIn(name, kind) => self.job_check_in(admitted, request, name, *kind),
            Endpoint::Deployments => match serde_json::to_string(&self.deployments()) {
                Ok(body) => AdminResponse::json(200, body),
                Err(e) => {
                    AdminResponse::error(500, &format!("cannot serialize the deployments: {e}"))
                }
            },
            Endpoint::Errors => AdminResponse::json(200, self.error_store().to_json()),
            Endpoint::Baselines => match self.baselines() {
                Some(baselines) => AdminResponse::json(200, baselines.to_json()),
                None => AdminResponse::error(404, "baselines are off ([baseline] enabled = false)"),
            },
            Endpoint::Alerts => match serde_json::to_string(&self.alerts().view()) {
                Ok(body) => AdminResponse::json(200, body),
                Err(e) => AdminResponse::error(500, &format!("cannot serialize the alerts: {e}")),
            },
            Endpoint::Audit => self.audit_view(request.query.as_deref()).await,
            Endpoint::AuditStats => self.audit_stats(request.query.as_deref()).await,
            Endpoint::Authz => AdminResponse::json(200, self.authz_view().to_string()),
            Endpoint::SetUserRoles(user) => {
                self.set_user_roles_answer(admitted, request, user, true)
            }
            Endpoint::ResetUserRoles(user) => {
                self.set_user_roles_answer(admitted, request, user, false)
            }
            Endpoint::CreateSilence => self.create_silence(admitted, request),
            Endpoint::DeleteSilence(id) => self.delete_silence(admitted, request, id),
            Endpoint::Loggers => {
                let (filter, source) = self.log_filter_ref().current_with_source();
                AdminResponse::json(
                    200,
                    serde_json::json!({ "filter": filter, "source": source.as_str() }).to_string(),
                )
            }
            Endpoint::SetLoggers => self.set_loggers(admitted, request),
            Endpoint::NotFound => AdminResponse::json(
                404,
                serde_json::json!({
                    "error": format!("no endpoint {}", request.path),
                    "endpoints": ENDPOINTS,
                })
                .to_string(),
            ),
            Endpoint::WrongMethod(allow) => AdminResponse::error(
                405,
                &format!(
                    "{} {} is not allowed; use {allow}",
                    request.method, request.path
                ),
            )
            .with_header("allow", *allow),
        };
        // Public answers (liveness, readiness status, metrics) may be cached by proxies; the rest
        // carry the operator's data.
        match admitted.endpoint {
            // The page's files carry their own caching headers (revalidated by ETag).
            Endpoint::Metrics | Endpoint::Live | Endpoint::Page | Endpoint::Asset(_) => response,
            Endpoint::Ready if !admitted.details => response,
            _ => response.with_header("cache-control", "no-store"),
        }
    }

    /// `GET /qiflow/api/audit?<query>`: newest records first, paged.
    async fn audit_view(&self, query: Option<&str>) -> AdminResponse {
        let query = match crate::audit::AuditQuery::from_query_string(query.unwrap_or("")) {
            Ok(q) => q,
            Err(e) => return AdminResponse::error(400, &e),
        };
        match self.audit_query(&query).await {
            Ok(page) => match serde_json::to_string(&page) {
                Ok(body) => AdminResponse::json(200, body),
                Err(e) => AdminResponse::error(500, &format!("cannot serialize the page: {e}")),
            },
            Err(e) => query_failed(&e),
        }
    }

    /// `GET /qiflow/api/audit/stats?from=…&to=…`: the records of the window (default the last
    /// 24 hours) counted by action, by outcome and by actor (the 50 busiest; the rest summed),
    /// read from the trail page by page, at most [`STATS_SCAN`] records (`truncated` says when
    /// there were more). Computed from the trail, not kept as metric labels: user ids never
    /// become series.
    async fn audit_stats(&self, query: Option<&str>) -> AdminResponse {
        let mut query = match crate::audit::AuditQuery::from_query_string(query.unwrap_or("")) {
            Ok(q) => q,
            Err(e) => return AdminResponse::error(400, &e),
        };
        // The system clock: what audit events are stamped with.
        let now = std::time::SystemTime::now();
        if query.from.is_none() {
            query.from = Some(crate::alert::rfc3339(
                now - std::time::Duration::from_secs(24 * 3600),
            ));
        }
        query.limit = Some(crate::audit::MAX_LIMIT);
        query.before = None;
        let mut by_action = std::collections::BTreeMap::<String, u64>::new();
        let mut by_outcome = std::collections::BTreeMap::<String, u64>::new();
        let mut by_actor = std::collections::HashMap::<String, u64>::new();
        let mut records = 0usize;
        let mut truncated = false;
        loop {
            let page = match self.audit_query(&query).await {
                Ok(page) => page,
                Err(e) => return query_failed(&e),
            };
            for record in &page.records {
                *by_action.entry(record.action.clone()).or_default() += 1;
                *by_outcome
                    .entry(record.outcome.as_str().to_owned())
                    .or_default() += 1;
                *by_actor.entry(record.actor.clone()).or_default() += 1;
            }
            records += page.records.len();
            match page.next {
                Some(next) if records < STATS_SCAN => query.before = Some(next),
                Some(_) => {
                    truncated = true;
                    break;
                }
                None => break,
            }
        }
        let mut actors: Vec<(String, u64)> = by_actor.into_iter().collect();
        actors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let other: u64 = actors.iter().skip(STATS_ACTORS).map(|(_, n)| n).sum();
        actors.truncate(STATS_ACTORS);
        AdminResponse::json(
            200,
            serde_json::json!({
                "from": query.from,
                "to": query.to,
                "records": records,
                "truncated": truncated,
                "by_action": by_action,
                "by_outcome": by_outcome,
                "by_actor": actors
                    .iter()
                    .map(|(actor, count)| serde_json::json!({ "actor": actor, "count": count }))
                    .collect::<Vec<_>>(),
                "other_actors_count": other,
            })
            .to_string(),
        )
    }

    /// `PUT /qiflow/api/authz/users/{id}` with `{"roles":["viewer"]}` (`set`), or `DELETE` (the
    /// configuration's roles back): the change audited as `authz.changed` with the roles before
    /// and after; a refused one audited as a failure.
    fn set_user_roles_answer(
        &self,
        admitted: &Admitted,
        request: &AdminRequest,
        user: &str,
        set: bool,
    ) -> AdminResponse {
        let failed = |status: u16, why: String| self.write_failed(admitted, request, status, &why);
        let roles = if set {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                roles: Vec<String>,
            }
            match serde_json::from_slice::<Body>(&request.body) {
                Ok(body) => Some(body.roles),
                Err(e) => {
                    return failed(
                        400,
                        format!("the body must be JSON like {{\"roles\":[\"viewer\"]}}: {e}"),
                    );
                }
            }
        } else {
            None
        };
        let request_id = request
            .header_value(crate::request::REQUEST_ID_HEADER)
            .filter(|id| crate::request::is_sane_request_id(id));
        match self.set_user_roles(user, roles, admitted.caller.name(), request_id) {
            Ok(after) => AdminResponse::json(200, after.to_string()),
            // The trail refused the record: nothing changed, and there is no trail to write to.
            Err((503, why)) => AdminResponse::error(503, &why),
            Err((status, why)) => failed(status, why),
        }
    }

    /// `POST /qiflow/api/alerts/silences`: checked against `[alerts] max_silence`, created,
    /// audited (undone when the trail cannot take the record).
    fn create_silence(&self, admitted: &Admitted, request: &AdminRequest) -> AdminResponse {
        let alerts = self.alerts();
        let max = self.config().alerts.max_silence;
        let created =
            crate::alert::parse_new_silence(&request.body, alerts.now(), max).and_then(|new| {
                let seconds = new.length.as_secs_f64().round() as u64;
                alerts
                    .silence_by(
                        new.matchers,
                        new.expires_at,
                        new.comment,
                        admitted.caller.name(),
                    )
                    .map(|silence| (silence, seconds))
            });
        let (silence, seconds) = match created {
            Ok(created) => created,
            Err(why) => return self.write_failed(admitted, request, 400, &why),
        };
        let event = self
            .admin_event(
                &admitted.caller,
                &admitted.endpoint,
                request,
                Outcome::Success,
            )
            .resource(format!("silence/{}", silence.id))
            .metadata("matchers", serde_json::json!(silence.matchers))
            .metadata("duration_seconds", seconds)
            .metadata("expires_at", crate::alert::rfc3339(silence.expires_at))
            .metadata("comment", silence.comment.clone())
            .build();
        if let Err(e) = self.audit(event) {
            alerts.remove_silence(&silence.id);
            return unaudited(&e);
        }
        tracing::warn!(
            target: "qiflow::admin",
            actor = admitted.caller.name(),
            silence = %silence.id,
            matchers = %serde_json::json!(silence.matchers),
            duration_seconds = seconds,
            "silence created"
        );
        match serde_json::to_string(&silence) {
            Ok(body) => AdminResponse::json(201, body),
            Err(e) => AdminResponse::error(500, &format!("cannot serialize the silence: {e}")),
        }
    }

    /// `DELETE /qiflow/api/alerts/silences/{id}`: removed and audited (put back when the trail
    /// cannot take the record).
    fn delete_silence(
        &self,
        admitted: &Admitted,
        request: &AdminRequest,
        id: &str,
    ) -> AdminResponse {
        let alerts = self.alerts();
        let Some(silence) = alerts.remove_silence(id) else {
            return AdminResponse::error(404, &format!("no silence with id {id:?}"));
        };
        let event = self
            .admin_event(
                &admitted.caller,
                &admitted.endpoint,
                request,
                Outcome::Success,
            )
            .resource(format!("silence/{id}"))
            .metadata("matchers", serde_json::json!(silence.matchers))
            .metadata("created_by", silence.created_by.clone())
            .build();
        if let Err(e) = self.audit(event) {
            let _ = alerts.restore_silence(silence);
            return unaudited(&e);
        }
        tracing::warn!(
            target: "qiflow::admin",
            actor = admitted.caller.name(),
            silence = %id,
            "silence deleted"
        );
        AdminResponse::empty(204)
    }

    /// `PUT /qiflow/api/loggers` with `{"filter":"info,sqlx=warn"}`: the new log filter put in
    /// force, audited (undone when the trail cannot take the record) and logged at target
    /// `qiflow::admin` with the previous and the new filter. A body or a filter that does not
    /// parse is answered 400 and changes nothing (the attempt is audited as a failure).
    fn set_loggers(&self, admitted: &Admitted, request: &AdminRequest) -> AdminResponse {
        let failed = |why: String, filter: Option<&str>| {
            let mut event = self.admin_event(
                &admitted.caller,
                &admitted.endpoint,
                request,
                Outcome::Failure,
            );
            if let Some(filter) = filter {
                event = event.metadata("filter", filter.to_owned());
            }
            let _ = self.audit(event.metadata("error", why.clone()).build());
            AdminResponse::error(400, &why)
        };
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            filter: String,
        }
        let body: Body = match serde_json::from_slice(&request.body) {
            Ok(body) => body,
            Err(e) => {
                return failed(
                    format!("the body must be JSON like {{\"filter\":\"info,sqlx=warn\"}}: {e}"),
                    None,
                );
            }
        };
        let parsed = match crate::logging::parse_filter(&body.filter) {
            Ok(parsed) => parsed,
            Err(e) => return failed(e.to_string(), Some(&body.filter)),
        };
        let filter = body.filter.trim();
        let log_filter = self.log_filter_ref();
        let changed = |previous: &str| {
            tracing::warn!(
                target: "qiflow::admin",
                actor = admitted.caller.name(),
                previous,
                filter,
                "log filter changed"
            );
        };
        // A filter quieter than warn would hide the line: it is written before the change.
        let hides_the_line = parsed.max_level() < tracing::level_filters::LevelFilter::WARN;
        if hides_the_line {
            changed(&log_filter.current());
        }
        let (previous, source) = match log_filter.set(filter) {
            Ok(previous) => previous,
            // Parsed above: not reached, but answered all the same.
            Err(e) => return failed(e.to_string(), Some(filter)),
        };
        let event = self
            .admin_event(
                &admitted.caller,
                &admitted.endpoint,
                request,
                Outcome::Success,
            )
            .metadata("previous", previous.clone())
            .metadata("filter", filter.to_owned())
            .build();
        if let Err(e) = self.audit(event) {
            log_filter.restore(filter, &previous, source);
            tracing::warn!(
                target: "qiflow::admin",
                actor = admitted.caller.name(),
                filter = %previous,
                "log filter change undone: the audit trail could not record it"
            );
            return unaudited(&e);
        }
        if !hides_the_line {
            changed(&previous);
        }
        AdminResponse::json(
            200,
            serde_json::json!({
                "filter": filter,
                "previous": previous,
                "source": crate::logging::FilterSource::Runtime.as_str(),
            })
            .to_string(),
        )
    }

    /// `POST /qiflow/api/jobs/{name}/start|success|fail`: the check-in, audited (a refused one
    /// as a failure); answers the job's view.
    fn job_check_in(
        &self,
        admitted: &Admitted,
        request: &AdminRequest,
        name: &str,
        kind: crate::jobs::CheckIn,
    ) -> AdminResponse {
        let checked = crate::jobs::parse_report(&request.body)
            .and_then(|report| self.jobs().check_in(name, kind, report));
        let outcome = if checked.is_ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        let mut event = self.admin_event(&admitted.caller, &admitted.endpoint, request, outcome);
        if let Err(why) = &checked {
            event = event.metadata("error", why.clone());
        }
        // A check-in already happened: a trail that cannot take its record is logged, not undone
        // (the job ran whether or not the trail records it).
        if let Err(e) = self.audit(event.build()) {
            tracing::warn!(target: "qiflow::admin", job = name, "the audit trail could not record a job check-in: {e}");
        }
        match checked {
            Ok(view) => match serde_json::to_string(&view) {
                Ok(body) => AdminResponse::json(200, body),
                Err(e) => AdminResponse::error(500, &format!("cannot serialize the job: {e}")),
            },
            Err(why) => AdminResponse::error(400, &why),
        }
    }

    /// A write refused for its content (`why`): audited as a failure with the reason, answered
    /// `status` with it.
    fn write_failed(
        &self,
        admitted: &Admitted,
        request: &AdminRequest,
        status: u16,
        why: &str,
    ) -> AdminResponse {
        let event = self
            .admin_event(
                &admitted.caller,
                &admitted.endpoint,
                request,
                Outcome::Failure,
            )
            .metadata("error", why.to_owned())
            .build();
        // A loss is counted, logged and reported by `audit` itself.
        let _ = self.audit(event);
        AdminResponse::error(status, why)
    }

    /// The audit event of an operator write: actor the token's name, the request id when the
    /// client sent a sane one.
    fn admin_event(
        &self,
        caller: &Caller,
        endpoint: &Endpoint,
        request: &AdminRequest,
        outcome: Outcome,
    ) -> crate::audit::AuditEventBuilder {
        let action = endpoint.action().unwrap_or("qiflow.admin");
        let resource = match endpoint {
            Endpoint::DeleteSilence(id) => format!("silence/{id}"),
            Endpoint::JobCheckIn(name, _) => format!("job/{name}"),
            Endpoint::SetLoggers => "loggers".to_owned(),
            Endpoint::SetUserRoles(user) | Endpoint::ResetUserRoles(user) => {
                format!("authz/users/{user}")
            }
            _ => "silence".to_owned(),
        };
        let mut event = AuditEvent::builder(caller.name(), action)
            .resource(resource)
            .outcome(outcome)
            .metadata("path", request.path.clone());
        if let Some(id) = request
            .header_value(crate::request::REQUEST_ID_HEADER)
            .filter(|id| crate::request::is_sane_request_id(id))
        {
            event = event.request_id(id);
        }
        event
    }
}

/// The answer to a query of the trail that failed: 503 without a queryable trail, 400 for a bad
/// query, 500 otherwise.
fn query_failed(e: &crate::audit::AuditError) -> AdminResponse {
    let status = match e.kind() {
        AuditErrorKind::Config => 503,
        AuditErrorKind::Query => 400,
        _ => 500,
    };
    AdminResponse::error(status, &e.to_string())
}

/// The most records `GET /qiflow/api/audit/stats` reads.
pub(crate) const STATS_SCAN: usize = 100_000;

/// The actors `GET /qiflow/api/audit/stats` names (the busiest).
const STATS_ACTORS: usize = 50;

/// A write undone because the audit trail could not record it.
fn unaudited(error: &crate::audit::AuditError) -> AdminResponse {
    AdminResponse::error(
        503,
        &format!("the audit trail could not record this change, so nothing was changed: {error}"),
    )
}
