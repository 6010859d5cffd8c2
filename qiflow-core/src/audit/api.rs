//! The query of `GET /qiflow/api/audit` (served by the operator surface, [`crate::admin`]).

use super::{AuditQuery, Outcome};

impl AuditQuery {
    /// Parses `actor`, `action`, `resource`, `outcome`, `from`, `to`, `limit`, `before` from a
    /// query string (`actor=alice&limit=20`), as `GET /qiflow/api/audit` takes them; the error
    /// names the parameter.
    ///
    /// ```
    /// use qiflow_core::audit::{AuditQuery, Outcome};
    ///
    /// let q = AuditQuery::from_query_string("actor=alice&outcome=denied&limit=20").unwrap();
    /// assert_eq!(q.actor.as_deref(), Some("alice"));
    /// assert_eq!(q.outcome, Some(Outcome::Denied));
    /// assert!(AuditQuery::from_query_string("colour=red").unwrap_err().contains("colour"));
    /// ```
    pub fn from_query_string(query: &str) -> Result<AuditQuery, String> {
        parse_query(query)
    }
}

/// See [`AuditQuery::from_query_string`].
pub(crate) fn parse_query(query: &str) -> Result<AuditQuery, String> {
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
