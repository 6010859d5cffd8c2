//! Queries over the stored trail: [`AuditQuery`], [`AuditPage`], the [`AuditStore`] trait and
//! the [`FileStore`] over a trail directory.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::chain::{self, AuditRecord, Line, parse_timestamp};
use super::segment;
use super::{AuditError, AuditErrorKind, Outcome};
use crate::secret::Keyring;
use crate::worker::BoxFuture;

/// The most records one page returns.
pub const MAX_LIMIT: usize = 1000;

/// A query: every set field must match; newest records first.
///
/// `/qiflow/api/audit` takes the same fields as query parameters (`actor`, `action`, `resource`,
/// `outcome`, `from`, `to` as RFC 3339, `limit`, `before`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct AuditQuery {
    /// Exact actor.
    pub actor: Option<String>,
    /// Exact action.
    pub action: Option<String>,
    /// Exact resource.
    pub resource: Option<String>,
    /// Outcome.
    pub outcome: Option<Outcome>,
    /// Exact request id.
    pub request_id: Option<String>,
    /// Exact trace id (32 lowercase hex digits): every record written in that trace, across
    /// the services that share this trail.
    pub trace_id: Option<String>,
    /// At or after this time (RFC 3339).
    pub from: Option<String>,
    /// Before this time (RFC 3339).
    pub to: Option<String>,
    /// Page size (1 to 1000). Defaults to 50.
    pub limit: Option<usize>,
    /// Only records with a seq below this (the `next` of the previous page).
    pub before: Option<u64>,
}

impl AuditQuery {
    /// A query matching every record.
    pub fn new() -> Self {
        Self::default()
    }

    /// The page size, clamped to 1..=1000.
    pub fn page_size(&self) -> usize {
        self.limit.unwrap_or(50).clamp(1, MAX_LIMIT)
    }

    /// Parses `from` and `to`.
    pub(crate) fn range(
        &self,
    ) -> Result<(Option<OffsetDateTime>, Option<OffsetDateTime>), AuditError> {
        let parse = |name: &str, v: &Option<String>| match v {
            None => Ok(None),
            Some(text) => parse_timestamp(text).map(Some).ok_or_else(|| {
                AuditError::new(
                    AuditErrorKind::Query,
                    format!("{name}: {text:?} is not an RFC 3339 time (like 2026-01-31T12:00:00Z)"),
                )
            }),
        };
        Ok((parse("from", &self.from)?, parse("to", &self.to)?))
    }

    /// Whether `record` matches (`range` from [`AuditQuery::range`]).
    pub(crate) fn matches(
        &self,
        record: &AuditRecord,
        range: &(Option<OffsetDateTime>, Option<OffsetDateTime>),
    ) -> bool {
        if self.before.is_some_and(|b| record.seq >= b)
            || self.actor.as_ref().is_some_and(|a| *a != record.actor)
            || self.action.as_ref().is_some_and(|a| *a != record.action)
            || self
                .resource
                .as_ref()
                .is_some_and(|r| *r != record.resource)
            || self.outcome.is_some_and(|o| o != record.outcome)
            || self
                .request_id
                .as_ref()
                .is_some_and(|r| Some(r) != record.request_id.as_ref())
            || self
                .trace_id
                .as_ref()
                .is_some_and(|t| Some(t) != record.trace_id.as_ref())
        {
            return false;
        }
        if range.0.is_some() || range.1.is_some() {
            let Some(at) = parse_timestamp(&record.timestamp) else {
                return false;
            };
            if range.0.is_some_and(|from| at < from) || range.1.is_some_and(|to| at >= to) {
                return false;
            }
        }
        true
    }
}

/// One page of results, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditPage {
    /// The records.
    pub records: Vec<AuditRecord>,
    /// Pass as `before` for the next (older) page; `None` on the last page.
    pub next: Option<u64>,
}

/// Something that answers queries over a stored trail.
pub trait AuditStore: Send + Sync + 'static {
    /// One page of records matching `query`, newest first.
    fn query<'a>(&'a self, query: &'a AuditQuery) -> BoxFuture<'a, Result<AuditPage, AuditError>>;
}

impl<S: AuditStore + ?Sized> AuditStore for Arc<S> {
    fn query<'a>(&'a self, query: &'a AuditQuery) -> BoxFuture<'a, Result<AuditPage, AuditError>> {
        (**self).query(query)
    }
}

impl<S: AuditStore + ?Sized> AuditStore for Box<S> {
    fn query<'a>(&'a self, query: &'a AuditQuery) -> BoxFuture<'a, Result<AuditPage, AuditError>> {
        (**self).query(query)
    }
}

/// An [`AuditStore`] with nothing in it: every query answers an empty page. For tests, and for
/// a custom sink whose records cannot be read back.
///
/// ```
/// use qiflow_core::audit::{AuditQuery, AuditStore, NoopAuditStore};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let page = NoopAuditStore.query(&AuditQuery::new()).await.unwrap();
/// assert!(page.records.is_empty() && page.next.is_none());
/// # });
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopAuditStore;

impl AuditStore for NoopAuditStore {
    fn query<'a>(&'a self, _query: &'a AuditQuery) -> BoxFuture<'a, Result<AuditPage, AuditError>> {
        Box::pin(async { Ok(AuditPage::default()) })
    }
}

/// Queries a trail directory by reading its segments, newest first (decrypting with the keyring
/// when records are encrypted).
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    keyring: Option<Arc<Keyring>>,
}

impl FileStore {
    /// A store over the trail in `dir`.
    pub fn new(dir: impl Into<PathBuf>, keyring: Option<Arc<Keyring>>) -> Self {
        Self {
            dir: dir.into(),
            keyring,
        }
    }

    /// The query, run with blocking file reads.
    pub fn query_blocking(&self, query: &AuditQuery) -> Result<AuditPage, AuditError> {
        let range = query.range()?;
        let limit = query.page_size();
        let io = |e: std::io::Error| {
            AuditError::new(
                AuditErrorKind::Io,
                format!("audit trail {}: cannot read: {e}", self.dir.display()),
            )
        };
        let segments = match segment::list(&self.dir) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        let mut records = Vec::new();
        for seg in segments.iter().rev() {
            if query.before.is_some_and(|b| seg.first_seq >= b) {
                continue;
            }
            let (lines, _) = segment::read_lines(seg).map_err(io)?;
            for (_, text) in lines.iter().rev() {
                let record = match Line::parse(text) {
                    Ok(Line::Record(r)) => r,
                    Ok(Line::Encrypted(r)) => match &self.keyring {
                        Some(k) => chain::decrypt(&r, k)
                            .map_err(|e| AuditError::new(AuditErrorKind::Encryption, e))?,
                        None => continue,
                    },
                    _ => continue, // digests, and a torn line left by a crash
                };
                if query.matches(&record, &range) {
                    if records.len() == limit {
                        let next = records.last().map(|r: &AuditRecord| r.seq);
                        return Ok(AuditPage { records, next });
                    }
                    records.push(record);
                }
            }
        }
        Ok(AuditPage {
            records,
            next: None,
        })
    }
}

impl AuditStore for FileStore {
    fn query<'a>(&'a self, query: &'a AuditQuery) -> BoxFuture<'a, Result<AuditPage, AuditError>> {
        Box::pin(async move {
            let this = self.clone();
            let query = query.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(h) => h
                    .spawn_blocking(move || this.query_blocking(&query))
                    .await
                    .unwrap_or_else(|e| {
                        Err(AuditError::new(
                            AuditErrorKind::Io,
                            format!("audit query failed: {e}"),
                        ))
                    }),
                Err(_) => this.query_blocking(&query),
            }
        })
    }
}
