//! The tamper-evident audit trail: [`AuditEvent`]s from handlers and the middleware, stored in
//! batches on the background worker by an [`AuditSink`] (the [`FileAuditSink`] by default, or
//! the PostgreSQL one), chained by SHA-256 and sealed by HMAC digests, and checked by
//! [`verify_dir`] (`qiflow audit verify`).
//!
//! # When things happen
//!
//! - [`Observer::audit`](crate::Observer::audit): the event's secret-looking metadata is
//!   redacted and it is queued (`[audit] queue_capacity`). When the queue is full the caller
//!   waits up to `[audit] block_timeout`; after that the record is **lost**: counted on
//!   `qiflow_audit_records_total{sink,outcome="lost"}` and `qiflow_dropped_total{pipeline="audit"}`,
//!   logged as an error (target `qiflow::audit`), and the loss hook
//!   ([`ObserverBuilder::on_audit_loss`](crate::ObserverBuilder::on_audit_loss)) is called, which
//!   raises the critical alert.
//! - On the worker: up to `[audit] batch_size` records (or what gathered within
//!   `[audit] flush_interval`) are written in one [`AuditSink::write`], which stores them durably
//!   (fsync, commit) before it returns. A failed batch is retried after pauses doubling from
//!   50 ms to 2 s (qiflow's one retry policy, without jitter) while the next retry would start
//!   within [`RETRY_FOR`] of the first attempt, then lost (as above). Written records count as
//!   `outcome="written"`.
//! - Digests: after `[audit] digest_every` records, when records waited `[audit]
//!   digest_interval` unsealed, at [`Observer::flush`](crate::Observer::flush), and when the
//!   [`Guard`](crate::Guard) is dropped (the guard writes everything queued within its budget,
//!   then the digest).
//! - [`Observer::audit_durable`](crate::Observer::audit_durable) resolves once the record's batch
//!   is stored: that is an *acknowledged* record, which a crash cannot lose.
//! - Every digest, once durable, is published outside the trail (module docs of
//!   [`WitnessFile`] and [`Seal`]): the witness (a file beside the trail directory, or a row in
//!   `qiflow_audit_witness`), an info line on target `qiflow::audit`, and the gauges
//!   `qiflow_audit_sealed_records` and `qiflow_audit_last_digest_timestamp_seconds`.
//! - At start (the file sink) or at the first batch (PostgreSQL), the sink compares the trail
//!   with its witness: a trail that ends before it, differs from it, or a witness that is
//!   missing, raises an [`AuditAlarm`] (logged and alerted; critical for a cut or rewritten
//!   trail), and sequence numbers continue past the witness, never reused. It also compares the
//!   last digest with `[audit] signing_key`: a key set on a trail sealed without one is a
//!   warning alarm, and the trail is sealed under the key at once (a `key` digest); a key
//!   changed or removed is an error alarm.
//!
//! The record format, the chain and what verification proves are in `docs/audit.md`.

mod api;
mod auto;
mod build;
mod chain;
pub(crate) mod check;
mod file;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
mod postgres_tls;
mod query;
mod segment;
mod verify;
mod witness;
mod writer;

use std::sync::Arc;
use std::time::Duration;

pub use crate::config::default_witness_path;
pub(crate) use auto::PendingAudit;
pub use auto::{ActorFn, ActorSource, AutoAudit};
pub(crate) use build::{AuditOptions, start};
pub use chain::{
    AuditRecord, Broken, DigestRecord, EncryptedRecord, GENESIS, Line, Location, Verified, Verifier,
};
pub use event::{AuditEvent, AuditEventBuilder, MAX_FIELD_LEN, MAX_METADATA_LEN, Outcome};
pub use file::{FileAuditSink, FileAuditSinkBuilder};
#[cfg(feature = "postgres")]
pub use postgres::{
    ChainVerified, PostgresAuditSink, PostgresStore, TABLE, WITNESS_TABLE, verify_postgres,
};
pub use query::{AuditPage, AuditQuery, AuditStore, FileStore, MAX_LIMIT, NoopAuditStore};
pub use verify::{verify_dir, verify_dir_with_witness};
pub use witness::{AlarmKind, AuditAlarm, Seal, SinkNotice, WitnessFile};
pub(crate) use writer::Auditor;

mod event;

use crate::worker::BoxFuture;

/// How long a failed batch is retried before its records are counted as lost: no retry starts
/// later than this after the batch's first attempt.
pub const RETRY_FOR: Duration = Duration::from_secs(30);

/// What kind of failure an [`AuditError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditErrorKind {
    /// A file could not be read or written.
    Io,
    /// The database failed or could not be reached.
    Database,
    /// The trail on disk is damaged; the sink will not extend it.
    Corrupt,
    /// A record could not be encrypted or decrypted.
    Encryption,
    /// The configuration cannot be used.
    Config,
    /// The record was not stored: the queue stayed full past `block_timeout`, the pipeline was
    /// shut down, or the sink kept failing.
    Lost,
    /// A query was malformed.
    Query,
}

/// An audit operation failed. The message names the file, table or key involved.
#[derive(Debug, Clone)]
pub struct AuditError {
    kind: AuditErrorKind,
    message: String,
}

impl AuditError {
    /// An error of `kind`.
    pub fn new(kind: AuditErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> AuditErrorKind {
        self.kind
    }
}

impl std::fmt::Display for AuditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AuditError {}

/// Why a sink is asked to seal (write a digest over) what it has written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealReason {
    /// `[audit] digest_interval` passed with records unsealed.
    Interval,
    /// [`Observer::flush`](crate::Observer::flush) or the guard's shutdown.
    Flush,
}

impl SealReason {
    /// The `reason` stored in the digest.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Interval => "interval",
            Self::Flush => "flush",
        }
    }
}

/// Where audit records are stored. Runs on qiflow's background worker, one call at a time.
///
/// Only [`AuditSink::write`] is required.
///
/// # Contract
///
/// - `write` stores the whole batch durably (fsync, a committed transaction) before it returns
///   `Ok`, or nothing of it: a sink that fails half-way undoes the half. The caller retries a
///   failed batch (for [`RETRY_FOR`]), so `write` must not store it twice.
/// - `seal` writes a digest over what is unsealed; called for timed digests, at
///   [`Observer::flush`](crate::Observer::flush) and at shutdown. Defaults to nothing.
pub trait AuditSink: Send + 'static {
    /// Stores a batch, durably, all or nothing.
    fn write<'a>(&'a mut self, batch: &'a [AuditEvent]) -> BoxFuture<'a, Result<(), AuditError>>;

    /// Seals what was written with a digest. Defaults to nothing.
    fn seal(&mut self, reason: SealReason) -> BoxFuture<'_, Result<(), AuditError>> {
        let _ = reason;
        Box::pin(async { Ok(()) })
    }

    /// The `sink` label of `qiflow_audit_records_total`. Defaults to `"custom"`.
    fn name(&self) -> &'static str {
        "custom"
    }

    /// What happened since the last call: where the trail stood when opened, the digests that
    /// became durable, and disagreements with the witness. Called by the writer after every
    /// `write` and `seal` (and once when the pipeline starts), which logs each notice on target
    /// `qiflow::audit`, sets the gauges `qiflow_audit_sealed_records` and
    /// `qiflow_audit_last_digest_timestamp_seconds`, and raises alarms as alerts. Defaults to
    /// nothing.
    fn take_notices(&mut self) -> Vec<SinkNotice> {
        Vec::new()
    }
}

impl<S: AuditSink + ?Sized> AuditSink for Box<S> {
    fn write<'a>(&'a mut self, batch: &'a [AuditEvent]) -> BoxFuture<'a, Result<(), AuditError>> {
        (**self).write(batch)
    }
    fn seal(&mut self, reason: SealReason) -> BoxFuture<'_, Result<(), AuditError>> {
        (**self).seal(reason)
    }
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn take_notices(&mut self) -> Vec<SinkNotice> {
        (**self).take_notices()
    }
}

/// A sink that accepts and discards every record (counted as written).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopAuditSink;

impl AuditSink for NoopAuditSink {
    fn write<'a>(&'a mut self, _batch: &'a [AuditEvent]) -> BoxFuture<'a, Result<(), AuditError>> {
        Box::pin(async { Ok(()) })
    }
    fn name(&self) -> &'static str {
        "noop"
    }
}

/// Records that were lost: what the loss hook receives.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuditLoss {
    /// The sink label (`file`, `postgres`, …).
    pub sink: &'static str,
    /// How many records were lost.
    pub records: u64,
    /// Why, in words (the queue was full, the sink kept failing: and its error).
    pub reason: String,
}

/// Called whenever audit records are lost (after the count and the error log). The place to
/// raise a critical alert.
pub type LossHook = Arc<dyn Fn(&AuditLoss) + Send + Sync>;

/// Called with every [`AuditAlarm`] a sink reports (after the log line): raises it as an alert.
pub(crate) type AlarmHook = Arc<dyn Fn(&'static str, &AuditAlarm) + Send + Sync>;
