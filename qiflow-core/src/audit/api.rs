//! The query of `GET /qiflow/api/audit` (served by the operator surface, [`crate::admin`]).

use super::{AuditQuery, Outcome};

impl AuditQuery {
    /// Parses `actor`, `action`, `resource`, `outcome`, `request_id`, `trace_id`, `from`, `to`,
    /// `limit`, `before` from a query string (`actor=alice&limit=20`), as
    /// `GET /qiflow/api/audit` takes them; the error names the parameter. `limit` is 1 to [`MAX_LIMIT`](super::MAX_LIMIT); outside that range
    /// the query is refused (the operator surface answers 400 with the range).
    ///
    /// ```
    /// use qiflow_core::audit::{AuditQuery, Outcome};
    ///
    /// let q = AuditQuery::from_query_string("actor=alice&outcome=denied&limit=20").unwrap();
    /// assert_eq!(q.actor.as_deref(), Some("alice"));
    /// assert_eq!(q.outcome, Some(Outcome::Denied));
    /// assert!(AuditQuery::from_query_string("colour=red").unwrap_err().contains("colour"));
    /// assert_eq!(
    ///     AuditQuery::from_query_string("limit=5000").unwrap_err(),
    ///     "limit: 5000 is out of range; use 1 to 1000 (the default is 50)"
    /// );
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
            "request_id" => q.request_id = Some(value),
            "trace_id" => {
                if crate::propagation::TraceId::from_hex(&value).is_none() {
                    return Err(format!(
                        "trace_id: {value:?} is not a trace id (32 lowercase hex digits, not all zero)"
                    ));
                }
                q.trace_id = Some(value);
            }
            "from" => q.from = Some(value),
            "to" => q.to = Some(value),
            "limit" => q.limit = Some(parse_limit(&value)?),
            "before" => {
                q.before = Some(value.parse().map_err(|_| {
                    format!("before: {value:?} is not a seq (use the `next` of the previous page)")
                })?)
            }
            other => {
                return Err(format!(
                    "unknown parameter {other:?}; use actor, action, resource, outcome, request_id, trace_id, from, to, limit, before"
                ));
            }
        }
    }
    q.range().map_err(|e| e.to_string())?;
    Ok(q)
}

/// `limit`: a number from 1 to [`MAX_LIMIT`](super::MAX_LIMIT).
fn parse_limit(value: &str) -> Result<usize, String> {
    let max = super::MAX_LIMIT;
    let range = format!("use 1 to {max} (the default is 50)");
    match value.parse::<u64>() {
        Ok(n) if n >= 1 && n <= max as u64 => Ok(n as usize),
        Ok(n) => Err(format!("limit: {n} is out of range; {range}")),
        Err(_) => Err(format!("limit: {value:?} is not a number; {range}")),
    }
}
