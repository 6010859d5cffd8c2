//! The operator surface: every qiflow endpoint (`/metrics`, `/health/*`, `/qiflow/api/*` and
//! the pages under `/qiflow/`), answered from a framework-free [`AdminRequest`] by
//! [`Observer::admin`](crate::Observer::admin), with authorization decided here, once.
//!
//! The adapters stay thin: `qiflow_axum::routes`, `qiflow_actix::configure` and
//! `qiflow_tower::Admin` each send the operator paths ([`Observer::is_admin_path`](crate::Observer::is_admin_path)) to
//! `Observer::admin` and turn the [`AdminResponse`] into their framework's response.
//!
//! # Who may see what
//!
//! | Endpoint | Without a token | `read` token | `write` token |
//! |---|---|---|---|
//! | `GET /health/live`, `/health/ready`, `/health` | status only (`{"status":…}`) | every check's detail | same |
//! | `GET /metrics` | answers (`[admin] public_metrics = false` closes it) | answers | answers |
//! | `GET /qiflow/` from a browser (`Accept: text/html`), `/qiflow/app.js`, `/qiflow/app.css`: the [dashboard](crate::dashboard) page, no data | answers | answers | answers |
//! | `GET /qiflow/` from other clients, `/qiflow/api`, `…/overview`, `…/errors`, `…/baselines`, `…/alerts`, `…/audit`, `…/audit/stats`, `…/loggers`, `…/jobs`, `…/deployments`, `…/authz` | 401 | answers | answers |
//! | `POST /qiflow/api/alerts/silences`, `DELETE …/silences/{id}`, `PUT /qiflow/api/loggers`, `POST …/jobs/{name}/start\|success\|fail`, `PUT`/`DELETE …/authz/users/{id}` | 401 | 403 | answers, audited |
//!
//! Tokens come from `[[admin.tokens]]` (a name, a token, a scope). When none is configured,
//! qiflow makes one at start (256 random bits) and keeps it in `[admin] token_file` (default
//! `data/admin-token`, mode `0600`, reused at the next start); the start-up log line says where,
//! never what. Presented tokens are compared in constant time. Requests on the operator
//! listener (`[admin] listen`) are trusted: no token is asked there.
//!
//! # When things happen
//!
//! - [`Observer::admin`](crate::Observer::admin): the path is resolved, the bearer token
//!   checked, then the endpoint answers. A refused request gets `401` (no or an unknown token,
//!   with a JSON body that says how to get in) or `403` (a `read` token on a write).
//! - A write (creating or deleting a silence, changing the log filter) becomes an audit record
//!   (actor: the token's name), a log line and a metric; when the audit trail cannot take the
//!   record, the write is undone and answered `503`. A `read` token's attempt to write is
//!   audited as `denied`.
//! - Every operator request is logged at target `qiflow::admin` (method, path, status,
//!   latency, actor; successful anonymous health and metrics reads at `debug`, so probes and
//!   scrapes do not flood the log) and counted on
//!   `qiflow_admin_requests_total{endpoint,status}`.

pub(crate) mod check;
mod message;
mod route;
mod token;

use std::time::Duration;

pub use message::{AdminRequest, AdminResponse, MAX_BODY};
pub(crate) use route::Endpoint;
pub use route::PREFIX;
pub(crate) use token::Caller;

use crate::config::{Config, TokenScope};
use crate::metrics::Metrics;
use route::{Access, Routes};
use token::Tokens;

/// What the gate let through: the endpoint, who asked, and whether they may see details.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) endpoint: Endpoint,
    pub(crate) caller: Caller,
    /// The caller holds a token (or is on the operator listener): health shows every check.
    pub(crate) details: bool,
}

/// A refused request: what to log and answer.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) endpoint: Endpoint,
    pub(crate) caller: Caller,
    pub(crate) response: AdminResponse,
}

/// Paths, tokens and the metric of the operator surface: built once by `init`.
#[derive(Debug)]
pub(crate) struct Gate {
    routes: Routes,
    tokens: Tokens,
    metrics: Metrics,
}

impl Gate {
    /// The gate for `config`: may make the token file (see [`crate::config::AdminConfig`]).
    /// Returns the warnings to log once the subscriber is installed.
    pub(crate) fn new(config: &Config, metrics: Metrics) -> Result<(Self, Vec<String>), String> {
        let (tokens, warnings) =
            Tokens::from_config(&config.admin, &config.health, config.operator_listener())?;
        Ok((
            Self {
                routes: Routes::new(config),
                tokens,
                metrics,
            },
            warnings,
        ))
    }

    /// Whether `path` is one of the operator surface's.
    pub(crate) fn contains(&self, path: &str) -> bool {
        self.routes.contains(path)
    }

    /// The file of the token qiflow made, when it made (or reused) one.
    pub(crate) fn generated_token_file(&self) -> Option<&std::path::Path> {
        self.tokens.generated()
    }

    /// Resolves the request and checks its caller: who may see what is decided here only.
    pub(crate) fn admit(&self, request: &AdminRequest) -> Result<Admitted, Refused> {
        let caller = self
            .tokens
            .caller(request.header_value("authorization"), request.trusted);
        let Some((endpoint, access)) = self.routes.resolve_request(
            &request.method,
            &request.path,
            request.header_value("accept"),
        ) else {
            return Err(Refused {
                endpoint: Endpoint::NotFound,
                caller,
                response: AdminResponse::error(404, "not a qiflow endpoint"),
            });
        };
        let scope = caller.scope();
        let refusal = match (access, scope) {
            (Access::Public, _) => None,
            (Access::Read | Access::Write, None) => Some(self.unauthorized(&caller)),
            (Access::Write, Some(TokenScope::Read)) => Some(AdminResponse::json(
                403,
                serde_json::json!({
                    "error": "forbidden",
                    "message": format!(
                        "the token {:?} has the read scope; this needs a token with scope = \"write\"",
                        caller.name()
                    ),
                })
                .to_string(),
            )),
            (Access::Read | Access::Write, Some(_)) => None,
        };
        if let Some(response) = refusal {
            return Err(Refused {
                endpoint,
                caller,
                response: response.with_header("cache-control", "no-store"),
            });
        }
        if request.oversized || request.body.len() > MAX_BODY {
            return Err(Refused {
                endpoint,
                caller,
                response: AdminResponse::error(
                    413,
                    &format!("the body is longer than {MAX_BODY} bytes"),
                ),
            });
        }
        Ok(Admitted {
            endpoint,
            details: scope.is_some(),
            caller,
        })
    }

    /// The `401` answer: what the caller did wrong, and how to get in.
    fn unauthorized(&self, caller: &Caller) -> AdminResponse {
        let how = if self.tokens.is_empty() {
            "no operator token is configured: add [[admin.tokens]] (name, token, scope) to the \
             configuration, or use the operator listener ([admin] listen)"
        } else {
            "send Authorization: Bearer <token>, with a token of [[admin.tokens]], or the one \
             qiflow made at start in the file named by [admin] token_file (the start-up log line \
             says where; default data/admin-token)"
        };
        let what = match caller {
            Caller::Unknown => "the bearer token matches no operator token",
            _ => "this qiflow endpoint needs an operator token",
        };
        AdminResponse::json(
            401,
            serde_json::json!({ "error": "unauthorized", "message": format!("{what}; {how}") })
                .to_string(),
        )
        .with_header("www-authenticate", "Bearer realm=\"qiflow\"")
    }

    /// The access line (`target = "qiflow::admin"`) and `qiflow_admin_requests_total`.
    pub(crate) fn record(
        &self,
        request: &AdminRequest,
        endpoint: &Endpoint,
        caller: &Caller,
        status: u16,
        latency: Duration,
    ) {
        self.metrics
            .counter(
                "qiflow_admin_requests_total",
                vec![
                    metrics::Label::new("endpoint", endpoint.label()),
                    metrics::Label::new("status", status_label(status)),
                ],
            )
            .increment(1);
        let latency_ms = crate::request::millis(latency);
        let user_agent = request.header_value("user-agent").unwrap_or("");
        let actor = caller.name();
        let quiet = status < 400
            && matches!(caller, Caller::Anonymous)
            && matches!(
                endpoint,
                Endpoint::Live | Endpoint::Ready | Endpoint::Metrics
            );
        macro_rules! line {
            ($level:ident, $message:literal $(, $field:ident = $value:expr)*) => {
                tracing::$level!(
                    target: "qiflow::admin",
                    parent: None,
                    method = %request.method,
                    path = %request.path,
                    endpoint = endpoint.label(),
                    status,
                    latency_ms,
                    actor,
                    user_agent,
                    trusted = request.trusted,
                    $($field = $value,)*
                    $message
                )
            };
        }
        if quiet {
            line!(debug, "operator request");
        } else if status == 401 || status == 403 {
            // A refusal is a security event: where it came from, when the adapter knows.
            let client_ip = request.client_ip.map(|ip| ip.to_string());
            line!(
                warn,
                "operator request refused",
                client_ip = client_ip.as_deref().unwrap_or("")
            );
        } else {
            line!(info, "operator request");
        }
    }
}

/// The `status` label: the code as text, without allocating for the common ones.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        413 => "413",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}
