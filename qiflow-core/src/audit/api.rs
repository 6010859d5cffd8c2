//! `GET /qiflow/api/audit`: the JSON view of the trail, framework-free, so every adapter serves
//! the same thing.

use super::{AuditErrorKind, AuditQuery, Outcome};

/// The path adapters mount the view at.
pub const API_PATH: &str = "/qiflow/api/audit";

/// The answer of [`api`]: a status code and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiResponse {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: String,
}

fn error(status: u16, message: &str) -> ApiResponse {
    ApiResponse {
        status,
        body: serde_json::json!({ "error": message }).to_string(),
    }
}

/// Parses `actor`, `action`, `resource`, `outcome`, `from`, `to`, `limit`, `before` from a
/// query string (`actor=alice&limit=20`).
pub fn parse_query(query: &str) -> Result<AuditQuery, String> {
    let mut q = AuditQuery::new();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        match &*key {
            "actor" => q.actor = Some(value),
            "action" => q.action = Some(value),
            "resource" => q.resource = Some(value),
            "outcome" => q.outcome = Some(value.parse::<Outcome>()?),
            "from" => q.from = Some(value),
            "to" => q.to = Some(value),
            "limit" => {
                q.limit = Some(value.parse().map_err(|_| {
                    format!(
                        "limit: {value:?} is not a number (1 to {})",
                        super::MAX_LIMIT
                    )
                })?)
            }
            "before" => {
                q.before = Some(value.parse().map_err(|_| {
                    format!("before: {value:?} is not a seq (use the `next` of the previous page)")
                })?)
            }
            other => {
                return Err(format!(
                    "unknown parameter {other:?}; use actor, action, resource, outcome, from, to, limit, before"
                ));
            }
        }
    }
    q.range().map_err(|e| e.to_string())?;
    Ok(q)
}

/// Answers `GET /qiflow/api/audit?<query>`: 401 without the `[health] token` when one is set,
/// 400 for a bad query, 503 when auditing is off, else 200 with
/// `{"records":[…],"next":<seq>|null}`, newest first.
pub async fn api(
    observer: &crate::Observer,
    query: &str,
    authorization: Option<&str>,
) -> ApiResponse {
    if !observer.authorized(authorization) {
        return error(401, "needs Authorization: Bearer <[health] token>");
    }
    let query = match parse_query(query) {
        Ok(q) => q,
        Err(e) => return error(400, &e),
    };
    match observer.audit_query(&query).await {
        Ok(page) => ApiResponse {
            status: 200,
            body: serde_json::to_string(&page).unwrap_or_else(|_| "{}".into()),
        },
        Err(e) if e.kind() == AuditErrorKind::Config => error(503, &e.to_string()),
        Err(e) if e.kind() == AuditErrorKind::Query => error(400, &e.to_string()),
        Err(e) => error(500, &e.to_string()),
    }
}
