//! [`PostgresAuditSink`]: the trail in a PostgreSQL table, with the same chain and digests as
//! the file sink; [`PostgresStore`] queries it; [`verify_postgres`] checks it.
//!
//! The table (created with its indexes when missing):
//!
//! Every instance of the service writes its own chain into the one table (the `instance`
//! column, `[service] instance`): writers never wait for each other, and each chain is verified
//! on its own and against its own witness row. Rows are ordered across chains by `pos`.
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS qiflow_audit (
//!     instance   TEXT NOT NULL DEFAULT '', -- the chain: the writing instance ('' before ids)
//!     seq        BIGINT NOT NULL,         -- position in the chain, digests included
//!     kind       TEXT NOT NULL,           -- 'record' | 'encrypted' | 'digest'
//!     id         TEXT,                    -- UUID v7 (records)
//!     timestamp  TEXT,                    -- RFC 3339 as hashed (records)
//!     ts         TIMESTAMPTZ,             -- the same instant, for range queries
//!     actor      TEXT,
//!     action     TEXT,
//!     resource   TEXT,
//!     outcome    TEXT,
//!     request_id TEXT,
//!     metadata   TEXT,                    -- canonical JSON, as hashed
//!     enc        TEXT,                    -- ENC:v1:… (encrypted records)
//!     digest     TEXT,                    -- the digest record's JSON (digests)
//!     prev_hash  TEXT NOT NULL,
//!     hash       TEXT NOT NULL,
//!     trace_id   TEXT,                    -- W3C trace id (records made in a trace)
//!     pos        BIGSERIAL NOT NULL,      -- insertion order across chains (query pages)
//!     PRIMARY KEY (instance, seq)
//! );
//! CREATE INDEX IF NOT EXISTS qiflow_audit_pos ON qiflow_audit (pos);
//! CREATE INDEX IF NOT EXISTS qiflow_audit_actor_pos ON qiflow_audit (actor, pos);
//! CREATE INDEX IF NOT EXISTS qiflow_audit_action_pos ON qiflow_audit (action, pos);
//! CREATE INDEX IF NOT EXISTS qiflow_audit_resource_pos ON qiflow_audit (resource, pos);
//! CREATE INDEX IF NOT EXISTS qiflow_audit_ts ON qiflow_audit (ts);
//! CREATE INDEX IF NOT EXISTS qiflow_audit_trace ON qiflow_audit (trace_id) WHERE trace_id IS NOT NULL;
//! -- The witness: where each chain was last sealed, updated in the digest's transaction.
//! CREATE TABLE IF NOT EXISTS qiflow_audit_witness (
//!     instance       TEXT PRIMARY KEY,     -- the chain
//!     id             SMALLINT NOT NULL DEFAULT 1,
//!     seq            BIGINT NOT NULL,      -- the last digest's seq
//!     sealed_records BIGINT NOT NULL,      -- records sealed since the trail began
//!     timestamp      TEXT NOT NULL,        -- the digest's time
//!     hash           TEXT NOT NULL,        -- the digest line's hash
//!     signature      TEXT NOT NULL,        -- the digest's signature
//!     updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
//! );
//! ```
//!
//! A table made by an earlier version (one chain, `seq` its key, one witness row) is migrated
//! in place at the first connection, under an advisory lock: its rows become the chain `''`,
//! which verifies as before; each instance then starts its own chain.
//!
//! The connection's TLS comes from the URL's `sslmode` and `sslrootcert` (module
//! `postgres_tls`): `prefer` by default.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Hook, Manager, ManagerConfig, Pool, RecyclingMethod};
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;

use super::chain::{
    self, AuditRecord, Broken, ChainState, DigestRecord, EncryptedRecord, KeyChange, Line,
    Location, Verified, Verifier, parse_timestamp,
};
use super::postgres_tls::{self, SslMode};
use super::witness::{AlarmKind, AuditAlarm, Seal, SinkNotice};
use super::{
    AuditError, AuditErrorKind, AuditEvent, AuditPage, AuditQuery, AuditSink, AuditStore,
    SealReason,
};
use crate::clock::Clock;
use crate::secret::Keyring;
use crate::worker::BoxFuture;

/// The table name.
pub const TABLE: &str = "qiflow_audit";

/// The witness table: one row, where the trail was last sealed.
pub const WITNESS_TABLE: &str = "qiflow_audit_witness";

/// Creates the tables, or migrates a table of one chain to one of many (see the module docs).
/// Run in a transaction under an advisory lock, so instances starting together do it once.
const SCHEMA: &str = "
SELECT pg_advisory_xact_lock(7136830485);
CREATE TABLE IF NOT EXISTS qiflow_audit (
    instance TEXT NOT NULL DEFAULT '', seq BIGINT NOT NULL, kind TEXT NOT NULL, id TEXT,
    timestamp TEXT, ts TIMESTAMPTZ, actor TEXT, action TEXT, resource TEXT, outcome TEXT,
    request_id TEXT, metadata TEXT, enc TEXT, digest TEXT, prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL, trace_id TEXT, pos BIGSERIAL NOT NULL, PRIMARY KEY (instance, seq));
-- Tables made before records carried a trace id, or before instances had chains.
ALTER TABLE qiflow_audit ADD COLUMN IF NOT EXISTS trace_id TEXT;
ALTER TABLE qiflow_audit ADD COLUMN IF NOT EXISTS instance TEXT NOT NULL DEFAULT '';
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'qiflow_audit'
                     AND column_name = 'pos') THEN
        -- Existing rows are numbered in table order, which is their insertion order.
        ALTER TABLE qiflow_audit ADD COLUMN pos BIGSERIAL NOT NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_index i
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                   WHERE i.indrelid = 'qiflow_audit'::regclass AND i.indisprimary
                     AND a.attname = 'instance') THEN
        ALTER TABLE qiflow_audit DROP CONSTRAINT IF EXISTS qiflow_audit_pkey;
        ALTER TABLE qiflow_audit ADD PRIMARY KEY (instance, seq);
    END IF;
END $$;
DROP INDEX IF EXISTS qiflow_audit_actor;
DROP INDEX IF EXISTS qiflow_audit_action;
DROP INDEX IF EXISTS qiflow_audit_resource;
CREATE INDEX IF NOT EXISTS qiflow_audit_pos ON qiflow_audit (pos);
CREATE INDEX IF NOT EXISTS qiflow_audit_actor_pos ON qiflow_audit (actor, pos);
CREATE INDEX IF NOT EXISTS qiflow_audit_action_pos ON qiflow_audit (action, pos);
CREATE INDEX IF NOT EXISTS qiflow_audit_resource_pos ON qiflow_audit (resource, pos);
CREATE INDEX IF NOT EXISTS qiflow_audit_ts ON qiflow_audit (ts);
CREATE INDEX IF NOT EXISTS qiflow_audit_trace ON qiflow_audit (trace_id) WHERE trace_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS qiflow_audit_witness (
    instance TEXT PRIMARY KEY, id SMALLINT NOT NULL DEFAULT 1, seq BIGINT NOT NULL,
    sealed_records BIGINT NOT NULL, timestamp TEXT NOT NULL, hash TEXT NOT NULL,
    signature TEXT NOT NULL, updated_at TIMESTAMPTZ NOT NULL DEFAULT now());
ALTER TABLE qiflow_audit_witness ADD COLUMN IF NOT EXISTS instance TEXT NOT NULL DEFAULT '';
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_index i
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                   WHERE i.indrelid = 'qiflow_audit_witness'::regclass AND i.indisprimary
                     AND a.attname = 'instance') THEN
        ALTER TABLE qiflow_audit_witness DROP CONSTRAINT IF EXISTS qiflow_audit_witness_pkey;
        ALTER TABLE qiflow_audit_witness ADD PRIMARY KEY (instance);
    END IF;
END $$;";

const WITNESS_SELECT: &str = "SELECT seq, sealed_records, timestamp, hash, signature FROM qiflow_audit_witness WHERE instance = $1";

/// Never moves the witness back.
const WITNESS_UPSERT: &str = "INSERT INTO qiflow_audit_witness (instance, id, seq, sealed_records, timestamp, hash, signature, updated_at)
VALUES ($6, 1, $1, $2, $3, $4, $5, now())
ON CONFLICT (instance) DO UPDATE SET seq = EXCLUDED.seq, sealed_records = EXCLUDED.sealed_records,
    timestamp = EXCLUDED.timestamp, hash = EXCLUDED.hash, signature = EXCLUDED.signature, updated_at = now()
WHERE qiflow_audit_witness.seq <= EXCLUDED.seq";

/// The columns a row is inserted with (`pos` is numbered by the table).
const COLUMNS: &str = "instance, seq, kind, id, timestamp, ts, actor, action, resource, outcome, request_id, metadata, enc, digest, prev_hash, hash, trace_id";
/// How many names `COLUMNS` lists.
const COLUMN_COUNT: usize = 17;
/// The columns a row is read with.
const SELECTED: &str = "instance, seq, kind, id, timestamp, ts, actor, action, resource, outcome, request_id, metadata, enc, digest, prev_hash, hash, trace_id, pos";

fn db(what: &str, e: impl std::error::Error) -> AuditError {
    AuditError::new(
        AuditErrorKind::Database,
        format!("audit database: {what}: {}", with_causes(&e)),
    )
}

/// The error and its causes: the driver's own text is often only "db error", with the server's
/// message (`FATAL: …`, a TLS failure) in its source.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// Builds a connection pool for `url`, with the TLS its `sslmode` asks for.
fn pool(url: &str) -> Result<Pool, AuditError> {
    let connect = postgres_tls::connect(url)?;
    let manager = Manager::from_config(
        connect.config,
        connect.tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Verified,
        },
    );
    let mut builder = Pool::builder(manager)
        .max_size(4)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1);
    if connect.mode == SslMode::Prefer {
        // `prefer` falls back to a plain connection when the server offers no TLS: say so.
        builder = builder.post_create(Hook::async_fn(|client, _| {
            Box::pin(async move {
                let ssl: Option<bool> = client
                    .query_opt("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
                    .await
                    .ok()
                    .flatten()
                    .and_then(|row| row.try_get(0).ok());
                if ssl == Some(false) {
                    tracing::warn!(
                        target: "qiflow::audit",
                        "audit database: connected without TLS: the server offers none (sslmode=prefer falls back to plain); set sslmode=require or verify-full in [audit] postgres_url to insist on TLS"
                    );
                }
                Ok(())
            })
        }));
    }
    builder.build().map_err(|e| {
        AuditError::new(
            AuditErrorKind::Config,
            format!("cannot build the pool: {e}"),
        )
    })
}

/// The witness row of `instance`'s chain, if the table and the row exist.
async fn read_witness(
    client: &tokio_postgres::Client,
    instance: &str,
) -> Result<Option<Seal>, AuditError> {
    let row = match client.query_opt(WITNESS_SELECT, &[&instance]).await {
        Ok(row) => row,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            return Ok(None);
        }
        Err(e) => return Err(db(&format!("cannot read {WITNESS_TABLE}"), e)),
    };
    let Some(row) = row else {
        return Ok(None);
    };
    let num = |c: &str| -> Result<u64, AuditError> {
        row.try_get::<_, i64>(c)
            .ok()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| {
                AuditError::new(
                    AuditErrorKind::Corrupt,
                    format!("{WITNESS_TABLE}: column {c} is not a count: the row was edited"),
                )
            })
    };
    let text = |c: &str| -> Result<String, AuditError> {
        row.try_get::<_, String>(c)
            .map_err(|e| db(&format!("cannot read {WITNESS_TABLE}.{c}"), e))
    };
    Ok(Some(Seal {
        seq: num("seq")?,
        sealed_records: num("sealed_records")?,
        timestamp: text("timestamp")?,
        hash: text("hash")?,
        signature: text("signature")?,
    }))
}

/// Sets the witness row of `instance`'s chain to `seal` (never backwards).
async fn write_witness(
    client: &impl deadpool_postgres::GenericClient,
    instance: &str,
    seal: &Seal,
) -> Result<(), AuditError> {
    let seq = i64::try_from(seal.seq).unwrap_or(i64::MAX);
    let sealed = i64::try_from(seal.sealed_records).unwrap_or(i64::MAX);
    client
        .execute(
            WITNESS_UPSERT,
            &[
                &seq,
                &sealed,
                &seal.timestamp,
                &seal.hash,
                &seal.signature,
                &instance,
            ],
        )
        .await
        .map(|_| ())
        .map_err(|e| db(&format!("cannot update {WITNESS_TABLE}"), e))
}

/// One row, as inserted.
#[derive(Debug, Clone)]
struct Row {
    instance: String,
    seq: i64,
    kind: &'static str,
    id: Option<String>,
    timestamp: Option<String>,
    ts: Option<OffsetDateTime>,
    actor: Option<String>,
    action: Option<String>,
    resource: Option<String>,
    outcome: Option<String>,
    request_id: Option<String>,
    trace_id: Option<String>,
    metadata: Option<String>,
    enc: Option<String>,
    digest: Option<String>,
    prev_hash: String,
    hash: String,
    /// The row's place across chains (0 until inserted).
    pos: i64,
}

impl Row {
    fn of(instance: &str, line: &Line) -> Self {
        let mut row = Row {
            instance: instance.to_owned(),
            seq: line.seq() as i64,
            kind: "record",
            id: None,
            timestamp: None,
            ts: None,
            actor: None,
            action: None,
            resource: None,
            outcome: None,
            request_id: None,
            trace_id: None,
            metadata: None,
            enc: None,
            digest: None,
            prev_hash: line.prev_hash().to_owned(),
            hash: line.hash().to_owned(),
            pos: 0,
        };
        match line {
            Line::Record(r) => {
                row.id = Some(r.id.clone());
                row.ts = parse_timestamp(&r.timestamp);
                row.timestamp = Some(r.timestamp.clone());
                row.actor = Some(r.actor.clone());
                row.action = Some(r.action.clone());
                row.resource = Some(r.resource.clone());
                row.outcome = Some(r.outcome.as_str().to_owned());
                row.request_id = r.request_id.clone();
                row.trace_id = r.trace_id.clone();
                row.metadata = serde_json::to_string(&r.metadata).ok();
            }
            Line::Encrypted(r) => {
                row.kind = "encrypted";
                row.enc = Some(r.enc.clone());
            }
            Line::Digest(d) => {
                row.kind = "digest";
                row.ts = parse_timestamp(&d.timestamp);
                row.digest = serde_json::to_string(d).ok();
            }
        }
        row
    }

    fn from_pg(row: &tokio_postgres::Row) -> Result<Self, String> {
        let kind: String = row.try_get("kind").map_err(|e| e.to_string())?;
        let get = |c: &str| -> Result<Option<String>, String> {
            row.try_get::<_, Option<String>>(c)
                .map_err(|e| e.to_string())
        };
        Ok(Row {
            instance: row.try_get("instance").map_err(|e| e.to_string())?,
            seq: row.try_get("seq").map_err(|e| e.to_string())?,
            kind: match kind.as_str() {
                "record" => "record",
                "encrypted" => "encrypted",
                "digest" => "digest",
                _ => return Err(format!("unknown kind {kind:?}")),
            },
            id: get("id")?,
            timestamp: get("timestamp")?,
            ts: None,
            actor: get("actor")?,
            action: get("action")?,
            resource: get("resource")?,
            outcome: get("outcome")?,
            request_id: get("request_id")?,
            trace_id: get("trace_id")?,
            metadata: get("metadata")?,
            enc: get("enc")?,
            digest: get("digest")?,
            prev_hash: row.try_get("prev_hash").map_err(|e| e.to_string())?,
            hash: row.try_get("hash").map_err(|e| e.to_string())?,
            pos: row.try_get("pos").map_err(|e| e.to_string())?,
        })
    }

    /// The line the row stands for (hashes as stored, not recomputed).
    fn line(&self) -> Result<Line, String> {
        let need =
            |v: &Option<String>, c: &str| v.clone().ok_or_else(|| format!("column {c} is NULL"));
        let seq = u64::try_from(self.seq).map_err(|_| "negative seq".to_owned())?;
        Ok(match self.kind {
            "record" => Line::Record(AuditRecord {
                seq,
                id: need(&self.id, "id")?,
                timestamp: need(&self.timestamp, "timestamp")?,
                actor: need(&self.actor, "actor")?,
                action: need(&self.action, "action")?,
                resource: need(&self.resource, "resource")?,
                outcome: need(&self.outcome, "outcome")?.parse()?,
                request_id: self.request_id.clone(),
                trace_id: self.trace_id.clone(),
                // The chain's instance is the record's (none for the chain before ids).
                instance: Some(self.instance.clone()).filter(|i| !i.is_empty()),
                metadata: serde_json::from_str(&need(&self.metadata, "metadata")?)
                    .map_err(|e| format!("metadata: {e}"))?,
                prev_hash: self.prev_hash.clone(),
                hash: self.hash.clone(),
            }),
            "encrypted" => Line::Encrypted(EncryptedRecord {
                seq,
                enc: need(&self.enc, "enc")?,
                prev_hash: self.prev_hash.clone(),
                hash: self.hash.clone(),
            }),
            _ => {
                let mut d: DigestRecord = serde_json::from_str(&need(&self.digest, "digest")?)
                    .map_err(|e| format!("digest: {e}"))?;
                d.seq = seq;
                d.prev_hash = self.prev_hash.clone();
                d.hash = self.hash.clone();
                Line::Digest(d)
            }
        })
    }
}

struct Pending {
    first_id: Option<uuid::Uuid>,
    rows: Vec<Row>,
    /// Retention: the chain's rows below this seq are deleted in the batch's transaction (only
    /// a batch holding a digest, which records the cut as its `retained_from`).
    prune_below: Option<i64>,
    after: ChainState,
    sealed_at: Option<SystemTime>,
    /// The digests among the rows, published once they are committed.
    seals: Vec<Seal>,
}

/// Stores the trail in the `qiflow_audit` table of a PostgreSQL database, as the chain of one
/// instance ([`PostgresAuditSink::instance`]): the instances of a service share the table, each
/// appending to its own chain without waiting for the others.
///
/// Connects lazily (the first batch creates the table and resumes the chain from its last row),
/// through a small pool that replaces dead connections, so the sink survives a database restart:
/// the failed batch is retried with the very same rows, and a batch whose commit succeeded
/// before the connection broke is recognised by its last row's hash, not inserted twice.
pub struct PostgresAuditSink {
    pool: Pool,
    /// The chain this sink appends to.
    instance: String,
    signing_key: Option<Vec<u8>>,
    keyring: Option<Arc<Keyring>>,
    clock: Arc<dyn Clock>,
    state: Option<ChainState>,
    pending: Option<Pending>,
    digest_every: u64,
    digest_interval: Duration,
    last_seal: SystemTime,
    /// Whether the table was compared with its witness (alarms are raised once).
    witness_checked: bool,
    notices: Vec<SinkNotice>,
    /// `[audit] retention`: rows sealed by a digest older than this are deleted.
    retention: Option<Duration>,
    /// A cut found and not yet committed with a digest.
    prune_below: Option<i64>,
    /// When to look for a cut next.
    next_prune_check: SystemTime,
}

/// How often a writer looks for rows past retention in its chain.
const PRUNE_CHECK_EVERY: Duration = Duration::from_secs(600);

impl std::fmt::Debug for PostgresAuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresAuditSink")
            .field("table", &TABLE)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl PostgresAuditSink {
    /// A sink for the database at `url` (no connection is made yet).
    pub fn new(
        url: &str,
        signing_key: Option<&[u8]>,
        keyring: Option<Arc<Keyring>>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AuditError> {
        Ok(Self {
            pool: pool(url)?,
            instance: String::new(),
            signing_key: signing_key.map(<[u8]>::to_vec),
            keyring,
            last_seal: clock.now(),
            clock,
            state: None,
            pending: None,
            digest_every: 1000,
            digest_interval: Duration::from_secs(60),
            witness_checked: false,
            notices: Vec::new(),
            retention: None,
            prune_below: None,
            next_prune_check: SystemTime::UNIX_EPOCH,
        })
    }

    /// A digest after this many records. Defaults to 1000.
    #[must_use]
    pub fn digest_every(mut self, n: u64) -> Self {
        self.digest_every = n.max(1);
        self
    }

    /// Deletes the rows of this sink's chain sealed by a digest older than `retention`
    /// (`[audit] retention`), looking every ten minutes; the digest that follows the cut records
    /// it as `retained_from`, so verification accepts the chain starting there. Each instance
    /// prunes its own chain only: writers never delete each other's rows. Defaults to none: keep
    /// everything.
    #[must_use]
    pub fn retention(mut self, retention: Option<Duration>) -> Self {
        self.retention = retention;
        self
    }

    /// The chain to append to: this instance's id (`[service] instance`), stamped on each
    /// record. Two processes must never share one: the second would find its rows taken and
    /// stop with an error. Defaults to `""`, the chain of a table written before instances had
    /// ids (its records carry no instance).
    #[must_use]
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = instance.into();
        self
    }

    /// A digest when records waited this long unsealed. Defaults to 60 s.
    #[must_use]
    pub fn digest_interval(mut self, d: Duration) -> Self {
        self.digest_interval = d;
        self
    }

    /// A query store sharing the sink's pool.
    pub fn store(&self) -> PostgresStore {
        PostgresStore {
            pool: self.pool.clone(),
            keyring: self.keyring.clone(),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, AuditError> {
        self.pool.get().await.map_err(|e| db("cannot connect", e))
    }

    /// Creates the table if missing and reads where the chain stands.
    async fn resume(&mut self) -> Result<ChainState, AuditError> {
        if let Some(state) = &self.state {
            return Ok(state.clone());
        }
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| db("cannot begin", e))?;
        tx.batch_execute(SCHEMA)
            .await
            .map_err(|e| db("cannot create or migrate the table qiflow_audit", e))?;
        tx.commit()
            .await
            .map_err(|e| db("cannot create or migrate the table qiflow_audit", e))?;
        let mut state = ChainState {
            instance: Some(self.instance.clone()).filter(|i| !i.is_empty()),
            ..ChainState::default()
        };
        let mut key_change = None;
        let last_digest = client
            .query_opt(
                &format!(
                    "SELECT {SELECTED} FROM {TABLE} WHERE instance = $1 AND kind = 'digest' ORDER BY seq DESC LIMIT 1"
                ),
                &[&self.instance],
            )
            .await
            .map_err(|e| db("cannot read the last digest", e))?;
        let from: i64 = match &last_digest {
            Some(row) => {
                let line = Row::from_pg(row).and_then(|r| r.line()).map_err(|e| {
                    AuditError::new(
                        AuditErrorKind::Corrupt,
                        format!("audit table: last digest: {e}"),
                    )
                })?;
                state.absorb(&line);
                if let Line::Digest(d) = &line {
                    key_change = KeyChange::of(d, self.key()).map(|change| (change, d.clone()));
                }
                line.seq() as i64 + 1
            }
            None => 0,
        };
        let rows = client
            .query(
                &format!(
                    "SELECT {SELECTED} FROM {TABLE} WHERE instance = $1 AND seq >= $2 ORDER BY seq"
                ),
                &[&self.instance, &from],
            )
            .await
            .map_err(|e| db("cannot read the unsealed rows", e))?;
        for row in &rows {
            let line = Row::from_pg(row).and_then(|r| r.line()).map_err(|e| {
                AuditError::new(AuditErrorKind::Corrupt, format!("audit table: {e}"))
            })?;
            state.absorb(&line);
        }
        let first = !self.witness_checked;
        if first && let Some(seal) = &state.last_seal {
            self.notices.push(SinkNotice::Resumed(seal.clone()));
        }
        self.witness_checked = true;
        let resumed = state.last_seal.clone();
        let mut state = self.check_witness(&client, state, first).await?;
        if let Some((change, last)) = key_change {
            if first {
                self.alarm(
                    change.alarm_kind(),
                    change.message(&chain_source(&self.instance), &last),
                );
            }
            if change == KeyChange::Added && state.last_seal == resumed {
                // Seal the unkeyed table under the key now (with the rows after its last digest,
                // if any), so it verifies with the key from this start on.
                let now = self.clock.now();
                let (d, _) = state.digest("key", OffsetDateTime::from(now), self.key());
                let seal = state.last_seal.clone();
                self.insert(&[Row::of(&self.instance, &d)], seal.as_ref(), None)
                    .await?;
                self.notices.extend(seal.map(SinkNotice::Sealed));
            }
        }
        self.state = Some(state.clone());
        Ok(state)
    }

    /// Compares the table with its witness row: a table that ends before it is continued after
    /// it (a `continue` digest, chained onto the witness), once with an alarm; a missing or
    /// foreign witness is an alarm.
    async fn check_witness(
        &mut self,
        client: &deadpool_postgres::Object,
        mut state: ChainState,
        alarm: bool,
    ) -> Result<ChainState, AuditError> {
        let ours = state.last_seal.clone();
        let Some(theirs) = read_witness(client, &self.instance).await? else {
            if let Some(ours) = &ours {
                if alarm {
                    self.alarm(
                        AlarmKind::WitnessMissing,
                        format!(
                            "audit {} is sealed up to seq {}, but {WITNESS_TABLE} has no witness row for it: it was deleted, so a chain cut back to an earlier digest cannot be detected at this start. The row is written again; compare with the published seals kept elsewhere (`qiflow::audit` log lines, the qiflow_audit_sealed_records gauge)",
                            chain_source(&self.instance),
                            ours.seq
                        ),
                    );
                }
                write_witness(client, &self.instance, ours).await?;
            }
            return Ok(state);
        };
        match state.last_seq() {
            Some(last) if last >= theirs.seq => {}
            last => {
                if alarm {
                    let (ends, from) = match last {
                        Some(last) => (format!("ends at seq {last}"), last + 1),
                        None => ("is empty".to_owned(), 0),
                    };
                    self.alarm(
                        AlarmKind::TrailCut,
                        format!(
                            "audit {} {ends}, but {WITNESS_TABLE} sealed seq {} at {}: rows seq {from}..={} are missing (deleted from the chain's end). New rows continue at seq {}, never reusing the lost ones; restore the lost rows from a backup, and run `qiflow audit verify --postgres`",
                            chain_source(&self.instance),
                            theirs.seq,
                            theirs.timestamp,
                            theirs.seq,
                            theirs.seq + 1
                        ),
                    );
                }
                state.continue_after(&theirs);
                let now = self.clock.now();
                let (d, _) = state.digest("continue", OffsetDateTime::from(now), self.key());
                let seal = state.last_seal.clone();
                self.insert(&[Row::of(&self.instance, &d)], seal.as_ref(), None)
                    .await?;
                self.notices.extend(seal.map(SinkNotice::Sealed));
                return Ok(state);
            }
        }
        if ours.as_ref() == Some(&theirs) {
            return Ok(state);
        }
        let seq = i64::try_from(theirs.seq).unwrap_or(i64::MAX);
        let there: Option<(String, String)> = client
            .query_opt(
                &format!("SELECT kind, hash FROM {TABLE} WHERE instance = $1 AND seq = $2"),
                &[&self.instance, &seq],
            )
            .await
            .map_err(|e| db("cannot read the witness's row", e))?
            .and_then(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?)));
        match there {
            Some((kind, hash)) if kind == "digest" && hash == theirs.hash => {
                if let Some(ours) = &ours {
                    tracing::warn!(
                        target: "qiflow::audit",
                        witness_seq = theirs.seq,
                        trail_seq = ours.seq,
                        "the audit witness row is behind the table (a witness put back from an older copy); it is updated"
                    );
                    write_witness(client, &self.instance, ours).await?;
                }
            }
            _ if alarm => self.alarm(
                AlarmKind::WitnessMismatch,
                format!(
                    "audit {}: the row at seq {} is not the digest {WITNESS_TABLE} sealed at {} (hash {}): the chain was rewritten from there, or the witness belongs to another table. Run `qiflow audit verify --postgres`",
                    chain_source(&self.instance),
                    theirs.seq,
                    theirs.timestamp,
                    theirs.hash.get(..12).unwrap_or(&theirs.hash)
                ),
            ),
            _ => {}
        }
        Ok(state)
    }

    fn alarm(&mut self, kind: AlarmKind, message: String) {
        self.notices
            .push(SinkNotice::Alarm(AuditAlarm::new(kind, message)));
    }

    fn key(&self) -> Option<&[u8]> {
        self.signing_key.as_deref()
    }

    /// Inserts `rows` in one transaction, with the witness row set to `witness` (the last
    /// digest among them), unless a previous attempt already committed them.
    async fn insert(
        &self,
        rows: &[Row],
        witness: Option<&Seal>,
        prune_below: Option<i64>,
    ) -> Result<(), AuditError> {
        let Some(last) = rows.last() else {
            return Ok(());
        };
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| db("cannot begin", e))?;
        let stored: Option<String> = tx
            .query_opt(
                &format!("SELECT hash FROM {TABLE} WHERE instance = $1 AND seq = $2"),
                &[&last.instance, &last.seq],
            )
            .await
            .map_err(|e| db("cannot check the batch", e))?
            .map(|r| r.get(0));
        if let Some(hash) = stored {
            if hash == last.hash {
                return Ok(()); // committed by an attempt whose answer was lost
            }
            return Err(AuditError::new(
                AuditErrorKind::Corrupt,
                format!(
                    "audit table: seq {} of chain {:?} is already taken by another row: another process writes as the same instance; give each instance its own [service] instance (or its own state directory)",
                    last.seq, last.instance
                ),
            ));
        }
        for chunk in rows.chunks(1000) {
            let mut sql = format!("INSERT INTO {TABLE} ({COLUMNS}) VALUES ");
            let mut params: Vec<&(dyn ToSql + Sync)> =
                Vec::with_capacity(chunk.len() * COLUMN_COUNT);
            for (i, r) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for c in 0..COLUMN_COUNT {
                    if c > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!("${}", i * COLUMN_COUNT + c + 1));
                }
                sql.push(')');
                params.extend_from_slice(&[
                    &r.instance,
                    &r.seq,
                    &r.kind,
                    &r.id,
                    &r.timestamp,
                    &r.ts,
                    &r.actor,
                    &r.action,
                    &r.resource,
                    &r.outcome,
                    &r.request_id,
                    &r.metadata,
                    &r.enc,
                    &r.digest,
                    &r.prev_hash,
                    &r.hash,
                    &r.trace_id,
                ]);
            }
            tx.execute(&sql, &params)
                .await
                .map_err(|e| db("cannot insert the batch", e))?;
        }
        if let Some(seal) = witness {
            write_witness(&tx, &last.instance, seal).await?;
        }
        if let Some(cut) = prune_below {
            let deleted = tx
                .execute(
                    &format!("DELETE FROM {TABLE} WHERE instance = $1 AND seq < $2"),
                    &[&last.instance, &cut],
                )
                .await
                .map_err(|e| db("cannot delete the rows past retention", e))?;
            if deleted > 0 {
                tracing::info!(target: "qiflow::audit", instance = %last.instance, below_seq = cut, rows = deleted, "retention deleted old audit rows");
            }
        }
        tx.commit()
            .await
            .map_err(|e| db("cannot commit the batch", e))
    }

    /// With retention, looks (at most every [`PRUNE_CHECK_EVERY`]) for the newest digest of this
    /// chain older than the retention: the rows up to it are cut with the next digest.
    async fn plan_prune(&mut self, state: &mut ChainState) -> Result<(), AuditError> {
        let Some(retention) = self.retention else {
            return Ok(());
        };
        let now = self.clock.now();
        if now < self.next_prune_check {
            return Ok(());
        }
        let cutoff = OffsetDateTime::from(now - retention);
        let client = self.client().await?;
        let newest_old: Option<i64> = client
            .query_one(
                &format!(
                    "SELECT max(seq) FROM {TABLE} WHERE instance = $1 AND kind = 'digest' AND ts < $2"
                ),
                &[&self.instance, &cutoff],
            )
            .await
            .map_err(|e| db("cannot look for rows past retention", e))?
            .get(0);
        self.next_prune_check = now + PRUNE_CHECK_EVERY;
        if let Some(seq) = newest_old
            && u64::try_from(seq + 1).is_ok_and(|cut| cut > state.retained_from)
        {
            self.prune_below = Some(seq + 1);
        }
        if let Some(cut) = self.prune_below {
            state.retained_from = state.retained_from.max(cut as u64);
        }
        Ok(())
    }

    async fn store_pending(&mut self) -> Result<(), AuditError> {
        let Some(pending) = &self.pending else {
            return Ok(());
        };
        self.insert(&pending.rows, pending.seals.last(), pending.prune_below)
            .await?;
        if let Some(p) = self.pending.take() {
            if p.prune_below.is_some() {
                self.prune_below = None;
            }
            self.state = Some(p.after);
            if let Some(at) = p.sealed_at {
                self.last_seal = at;
            }
            self.notices
                .extend(p.seals.into_iter().map(SinkNotice::Sealed));
        }
        Ok(())
    }
}

impl AuditSink for PostgresAuditSink {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn take_notices(&mut self) -> Vec<SinkNotice> {
        std::mem::take(&mut self.notices)
    }

    fn write<'a>(&'a mut self, batch: &'a [AuditEvent]) -> BoxFuture<'a, Result<(), AuditError>> {
        Box::pin(async move {
            let first_id = batch.first().map(|e| e.id);
            let same = self
                .pending
                .as_ref()
                .is_some_and(|p| p.first_id == first_id && p.first_id.is_some());
            if !same {
                if self.pending.take().is_some() {
                    // The previous batch was given up (lost) — or committed after all, with its
                    // answer lost: read where the chain stands from the table again.
                    self.state = None;
                }
                let mut state = self.resume().await?;
                self.plan_prune(&mut state).await?;
                let now = self.clock.now();
                let mut rows = Vec::with_capacity(batch.len() + 1);
                let mut sealed_at = None;
                let mut seals = Vec::new();
                for event in batch {
                    let (line, _) = state
                        .record(event, self.keyring.as_deref())
                        .map_err(|e| AuditError::new(AuditErrorKind::Encryption, e))?;
                    rows.push(Row::of(&self.instance, &line));
                    if state.unsealed_records >= self.digest_every {
                        let (d, _) = state.digest("count", OffsetDateTime::from(now), self.key());
                        rows.push(Row::of(&self.instance, &d));
                        seals.extend(state.last_seal.clone());
                        sealed_at = Some(now);
                    }
                }
                if state.unsealed_records > 0
                    && now.duration_since(self.last_seal).unwrap_or_default()
                        >= self.digest_interval
                {
                    let (d, _) = state.digest("interval", OffsetDateTime::from(now), self.key());
                    rows.push(Row::of(&self.instance, &d));
                    seals.extend(state.last_seal.clone());
                    sealed_at = Some(now);
                }
                let prune_below = self.prune_below.filter(|_| !seals.is_empty());
                self.pending = Some(Pending {
                    first_id,
                    rows,
                    prune_below,
                    after: state,
                    sealed_at,
                    seals,
                });
            }
            self.store_pending().await
        })
    }

    fn seal(&mut self, reason: SealReason) -> BoxFuture<'_, Result<(), AuditError>> {
        Box::pin(async move {
            // A batch still pending after failed retries was given up: re-read the chain state.
            if self.pending.take().is_some() {
                self.state = None;
            }
            let mut state = self.resume().await?;
            if state.unsealed_records == 0 {
                return Ok(());
            }
            self.plan_prune(&mut state).await?;
            let now = self.clock.now();
            let (d, _) = state.digest(reason.as_str(), OffsetDateTime::from(now), self.key());
            let seals = state.last_seal.clone().into_iter().collect();
            self.pending = Some(Pending {
                first_id: None,
                rows: vec![Row::of(&self.instance, &d)],
                prune_below: self.prune_below,
                after: state,
                sealed_at: Some(now),
                seals,
            });
            let result = self.store_pending().await;
            self.pending = None;
            result
        })
    }
}

/// Queries the `qiflow_audit` table.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    keyring: Option<Arc<Keyring>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// A store over the database at `url`.
    pub fn new(url: &str, keyring: Option<Arc<Keyring>>) -> Result<Self, AuditError> {
        Ok(Self {
            pool: pool(url)?,
            keyring,
        })
    }

    async fn run(&self, query: &AuditQuery) -> Result<AuditPage, AuditError> {
        let range = query.range()?;
        let limit = query.page_size();
        let client = self.pool.get().await.map_err(|e| db("cannot connect", e))?;
        let encrypted = self.keyring.is_some();
        let mut sql = format!(
            "SELECT {SELECTED} FROM {TABLE} WHERE kind IN ('record', 'encrypted') AND pos < $1"
        );
        let before = query
            .before
            .map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64);
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(before)];
        if !encrypted {
            let mut add = |column: &str, value: Option<String>| {
                if let Some(v) = value {
                    params.push(Box::new(v));
                    sql.push_str(&format!(" AND {column} = ${}", params.len()));
                }
            };
            add("actor", query.actor.clone());
            add("action", query.action.clone());
            add("resource", query.resource.clone());
            add("outcome", query.outcome.map(|o| o.as_str().to_owned()));
            add("request_id", query.request_id.clone());
            add("trace_id", query.trace_id.clone());
            if let Some(from) = range.0 {
                params.push(Box::new(from));
                sql.push_str(&format!(" AND ts >= ${}", params.len()));
            }
            if let Some(to) = range.1 {
                params.push(Box::new(to));
                sql.push_str(&format!(" AND ts < ${}", params.len()));
            }
        }
        // Encrypted rows are filtered after decryption, so they are read in chunks.
        let chunk = if encrypted { 500 } else { limit + 1 };
        sql.push_str(&format!(" ORDER BY pos DESC LIMIT {chunk}"));
        let mut records: Vec<AuditRecord> = Vec::new();
        // The position of the last record taken: the next page starts below it.
        let mut last_taken = before;
        let mut cursor = before;
        loop {
            params[0] = Box::new(cursor);
            let refs: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                .collect();
            let rows = client
                .query(&sql, &refs)
                .await
                .map_err(|e| db("query failed", e))?;
            let n = rows.len();
            for row in &rows {
                let (line, pos) = Row::from_pg(row)
                    .and_then(|r| Ok((r.line()?, r.pos)))
                    .map_err(|e| {
                        AuditError::new(AuditErrorKind::Corrupt, format!("audit table: {e}"))
                    })?;
                cursor = pos;
                let record = match line {
                    Line::Record(r) => r,
                    Line::Encrypted(r) => match &self.keyring {
                        Some(k) => chain::decrypt(&r, k)
                            .map_err(|e| AuditError::new(AuditErrorKind::Encryption, e))?,
                        None => continue,
                    },
                    Line::Digest(_) => continue,
                };
                if query.matches(&record, &range) {
                    if records.len() == limit {
                        let next = u64::try_from(last_taken).ok();
                        return Ok(AuditPage { records, next });
                    }
                    records.push(record);
                    last_taken = pos;
                }
            }
            if n < chunk {
                return Ok(AuditPage {
                    records,
                    next: None,
                });
            }
        }
    }
}

impl AuditStore for PostgresStore {
    fn query<'a>(&'a self, query: &'a AuditQuery) -> BoxFuture<'a, Result<AuditPage, AuditError>> {
        Box::pin(self.run(query))
    }
}

/// One chain of the `qiflow_audit` table, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChainVerified {
    /// The instance that writes the chain (`""`: the chain of a table written before instances
    /// had ids).
    pub instance: String,
    /// What its verification found.
    pub verified: Verified,
}

/// Where a chain is, for messages: `table qiflow_audit, instance web-1`.
fn chain_source(instance: &str) -> String {
    if instance.is_empty() {
        format!("table {TABLE}")
    } else {
        format!("table {TABLE}, instance {instance}")
    }
}

/// Verifies every chain in the `qiflow_audit` table at `url` (one per instance that wrote
/// there), each as [`verify_dir`](super::verify_dir) does a directory and against its witness
/// row in `qiflow_audit_witness`, as [`verify_dir_with_witness`](super::verify_dir_with_witness)
/// does against a witness file: a chain that ends before its witness, a sealed chain without a
/// witness row, or a witness row whose chain has no rows left is broken. Each row is checked as
/// the line its columns stand for; a [`Broken`] names the chain's instance in its location.
/// The chains come back ordered by instance.
pub async fn verify_postgres(url: &str, key: Option<&[u8]>) -> Result<Vec<ChainVerified>, Broken> {
    let at_table = |seq: u64, reason: String| Broken {
        seq,
        location: Location {
            source: format!("table {TABLE}"),
            line: 0,
        },
        reason,
    };
    let pool = pool(url).map_err(|e| at_table(0, e.to_string()))?;
    let client = pool
        .get()
        .await
        .map_err(|e| at_table(0, format!("cannot connect: {}", with_causes(&e))))?;
    let mut instances: Vec<String> = match client
        .query(&format!("SELECT DISTINCT instance FROM {TABLE}"), &[])
        .await
    {
        Ok(rows) => rows.iter().filter_map(|r| r.try_get(0).ok()).collect(),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            return Err(at_table(0, "the table is empty or missing".into()));
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_COLUMN) => {
            return Err(at_table(
                0,
                "the table has no instance column: it was written by an earlier qiflow. Start the service once with this version (it migrates the table in place), or verify with the qiflow CLI of that version".into(),
            ));
        }
        Err(e) => return Err(at_table(0, format!("cannot read: {}", with_causes(&e)))),
    };
    // Chains whose rows are all gone still have their witness row.
    if let Ok(rows) = client
        .query(&format!("SELECT instance FROM {WITNESS_TABLE}"), &[])
        .await
    {
        instances.extend(rows.iter().filter_map(|r| r.try_get(0).ok()));
    }
    instances.sort();
    instances.dedup();
    if instances.is_empty() {
        return Err(at_table(0, "the table is empty or missing".into()));
    }
    let mut chains = Vec::with_capacity(instances.len());
    for instance in instances {
        let verified = verify_chain(&client, &instance, key).await?;
        chains.push(ChainVerified { instance, verified });
    }
    Ok(chains)
}

/// Verifies the chain of `instance`.
async fn verify_chain(
    client: &tokio_postgres::Client,
    instance: &str,
    key: Option<&[u8]>,
) -> Result<Verified, Broken> {
    let source = chain_source(instance);
    let at_chain = |seq: u64, reason: String| Broken {
        seq,
        location: Location {
            source: source.clone(),
            line: 0,
        },
        reason,
    };
    let witness = read_witness(client, instance)
        .await
        .map_err(|e| at_chain(0, e.to_string()))?;
    let mut verifier = Verifier::new(key);
    if let Some(seal) = witness.clone() {
        verifier.expect_witness(seal);
    }
    let mut after: i64 = -1;
    let mut any = false;
    loop {
        let rows = client
            .query(
                &format!(
                    "SELECT {SELECTED} FROM {TABLE} WHERE instance = $1 AND seq > $2 ORDER BY seq LIMIT 10000"
                ),
                &[&instance, &after],
            )
            .await
            .map_err(|e| {
                at_chain(
                    verifier.expected_seq(),
                    format!("cannot read: {}", with_causes(&e)),
                )
            })?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            any = true;
            let seq = verifier.expected_seq();
            let location = Location {
                source: source.clone(),
                line: 0,
            };
            let line = Row::from_pg(row)
                .and_then(|r| {
                    after = r.seq;
                    r.line()
                })
                .map_err(|e| Broken {
                    seq,
                    location: location.clone(),
                    reason: format!("row cannot be read ({e}): it was edited"),
                })?;
            let json = serde_json::to_vec(&line).unwrap_or_default();
            verifier.push(&json, location)?;
        }
    }
    if !any {
        return Err(match &witness {
            Some(seal) => at_chain(
                seal.seq,
                format!(
                    "{WITNESS_TABLE} sealed this chain up to seq {} at {}, but it has no rows: they were deleted",
                    seal.seq, seal.timestamp
                ),
            ),
            None => at_chain(0, "the chain is empty".into()),
        });
    }
    let verified = verifier.finish()?;
    if witness.is_none()
        && let Some(last) = &verified.last_seal
    {
        return Err(at_chain(
            last.seq,
            format!(
                "the chain is sealed up to seq {}, but {WITNESS_TABLE} has no witness row for it: it was deleted, so a chain cut back to an earlier digest cannot be ruled out; compare with a copy kept elsewhere (the `qiflow::audit` log lines, the qiflow_audit_sealed_records gauge)",
                last.seq
            ),
        ));
    }
    Ok(verified)
}
