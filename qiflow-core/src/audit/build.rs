//! Starting the audit pipeline from `[audit]` (what `ObserverBuilder::build` calls).

use std::sync::Arc;

use super::writer::{Accounts, Writer};
use super::{
    ActorFn, ActorSource, AlarmHook, AuditSink, AuditStore, Auditor, AutoAudit, FileAuditSink,
    FileStore, LossHook,
};
use crate::clock::Clock;
use crate::config::{AuditSinkKind, Config};
use crate::logging::Redactor;
use crate::metrics::Metrics;
use crate::secret::Keyring;
use crate::worker::{Overflow, PipelineOptions, Worker};

/// A sink and the store that queries what it wrote.
type SinkAndStore = (Box<dyn AuditSink>, Option<Arc<dyn AuditStore>>);

/// What the host set on the builder.
#[derive(Default)]
pub(crate) struct AuditOptions {
    pub(crate) sink: Option<SinkAndStore>,
    pub(crate) on_loss: Option<LossHook>,
    /// Raises the sink's alarms (a trail behind its witness, …) as alerts.
    pub(crate) on_alarm: Option<AlarmHook>,
    pub(crate) actor: Option<ActorFn>,
    pub(crate) keyring: Option<Arc<Keyring>>,
}

/// Starts the audit pipeline, or `None` when `[audit] enabled = false`.
pub(crate) fn start(
    config: &Config,
    worker: &Worker,
    metrics: &Metrics,
    clock: Arc<dyn Clock>,
    options: AuditOptions,
) -> Result<Option<Auditor>, String> {
    let audit = &config.audit;
    if !audit.enabled {
        return Ok(None);
    }
    let keyring = match (audit.encrypt, options.keyring) {
        (false, _) => None,
        (true, Some(k)) => Some(k),
        (true, None) => Some(Arc::new(Keyring::from_env().map_err(|e| {
            format!("audit.encrypt: records are encrypted with the keyring, which cannot be read: {e}; set QIFLOW_MASTER_KEY or QIFLOW_MASTER_KEY_FILE")
        })?)),
    };
    let signing_key = audit
        .signing_key
        .as_ref()
        .map(|k| k.expose().as_bytes().to_vec());
    let (mut sink, store): SinkAndStore = match options.sink {
        Some(custom) => custom,
        None => match audit.sink {
            AuditSinkKind::Postgres => postgres(config, keyring.clone(), clock.clone())?,
            _ => {
                let sink = FileAuditSink::builder(&audit.dir)
                    .segment_size(audit.segment_size)
                    .segment_age(audit.segment_age)
                    .digest_every(audit.digest_every)
                    .digest_interval(audit.digest_interval)
                    .retention(audit.retention)
                    .compress(audit.compress)
                    .signing_key(signing_key.as_deref())
                    .keyring(keyring.clone())
                    .clock(clock.clone())
                    .witness(Some(audit.witness_path()))
                    .instance(Some(config.service.instance.clone()))
                    .open()
                    .map_err(|e| format!("audit.dir: {e}"))?;
                let store = FileStore::new(&audit.dir, keyring.clone());
                (Box::new(sink), Some(Arc::new(store)))
            }
        },
    };
    let auto = if audit.routes.is_empty() {
        None
    } else {
        let actor = match (options.actor, audit.actor_header.trim()) {
            (Some(f), _) => ActorSource::Custom(f),
            (None, "") => ActorSource::None,
            (None, h) => ActorSource::Header(h.to_ascii_lowercase()),
        };
        Some(AutoAudit::new(&audit.routes, actor)?)
    };
    let accounts = Accounts::new(metrics, sink.name(), options.on_loss, options.on_alarm);
    // Published by `Auditor::publish_startup` once the host's log subscriber is installed.
    let startup = sink.take_notices();
    let pipeline = worker.add(
        PipelineOptions::new("audit")
            .capacity(audit.queue_capacity)
            .overflow(Overflow::Block(audit.block_timeout))
            .batch_size(audit.batch_size)
            .linger(audit.flush_interval)
            .report_errors(false),
        Writer::new(sink, accounts.clone()),
    );
    {
        // Records the guard had to abandon (its budget ran out) are lost too: say so loudly.
        let accounts = accounts.clone();
        worker.on_shutdown(Box::new(move |stats| {
            let abandoned: u64 = stats
                .iter()
                .filter(|s| s.name == "audit")
                .map(|s| s.dropped_shutdown)
                .sum();
            if abandoned > 0 {
                accounts.lose(
                    abandoned,
                    "the guard's flush budget ran out with audit records queued or in flight"
                        .into(),
                );
            }
        }));
    }
    {
        // Timed digests while no records arrive.
        let pipeline = pipeline.clone();
        let every = audit.digest_interval;
        worker.handle().spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                pipeline.request_flush();
            }
        });
    }
    Ok(Some(Auditor::new(
        pipeline,
        accounts,
        Redactor::new(&config.logging.redact),
        store,
        auto,
        startup,
    )))
}

#[cfg(feature = "postgres")]
fn postgres(
    config: &Config,
    keyring: Option<Arc<Keyring>>,
    clock: Arc<dyn Clock>,
) -> Result<SinkAndStore, String> {
    let audit = &config.audit;
    let Some(url) = &audit.postgres_url else {
        return Err("audit.postgres_url: is required when audit.sink = \"postgres\"".into());
    };
    let signing_key = audit
        .signing_key
        .as_ref()
        .map(|k| k.expose().as_bytes().to_vec());
    let sink =
        super::PostgresAuditSink::new(url.expose(), signing_key.as_deref(), keyring.clone(), clock)
            .map_err(|e| format!("audit.postgres_url: {e}"))?
            .digest_every(audit.digest_every)
            .digest_interval(audit.digest_interval)
            .instance(config.service.instance.clone())
            .retention(audit.retention);
    let store = sink.store();
    Ok((Box::new(sink), Some(Arc::new(store))))
}

#[cfg(not(feature = "postgres"))]
fn postgres(
    _config: &Config,
    _keyring: Option<Arc<Keyring>>,
    _clock: Arc<dyn Clock>,
) -> Result<SinkAndStore, String> {
    Err(format!(
        "audit.sink: {}",
        crate::config::needs_feature("\"postgres\"", "postgres")
    ))
}
