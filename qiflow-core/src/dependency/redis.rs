//! Redis (feature `redis`): [`Dependency::redis`] registers a server's `PING` as the readiness
//! check and its `INFO` figures as gauges.

use std::sync::Arc;

use metrics::{Counter, Gauge, Label};

use super::{Dependency, RemoteStats};
use crate::health::CheckResult;
use crate::worker::BoxFuture;

/// One connection, made at first use and made again after it failed: the sampler and the
/// readiness check share it, so they open no connection per call (each new connection also
/// costs a server before 7.2 two error replies, for the client name it announces).
struct Link {
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl Link {
    async fn query<T: redis::FromRedisValue>(&self, command: &str) -> redis::RedisResult<T> {
        let mut slot = self.connection.lock().await;
        let connection = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(self.client.get_multiplexed_async_connection().await?),
        };
        let result = redis::cmd(command).query_async(connection).await;
        if let Err(e) = &result
            && (e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal())
        {
            *slot = None;
        }
        result
    }
}

/// The gauges of one server's `INFO`.
struct Info {
    link: Arc<Link>,
    used_memory: Gauge,
    max_memory: Gauge,
    clients: Gauge,
    ops: Gauge,
    error_replies: Counter,
    evicted: Counter,
}

impl RemoteStats for Info {
    fn sample(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Ok(text) = self.link.query::<String>("INFO").await else {
                return;
            };
            let fields = parse_info(&text);
            let get = |key: &str| {
                fields
                    .iter()
                    .find(|(k, _)| *k == key)
                    .and_then(|(_, v)| v.parse::<f64>().ok())
            };
            if let Some(v) = get("used_memory") {
                self.used_memory.set(v);
            }
            if let Some(v) = get("maxmemory") {
                self.max_memory.set(v);
            }
            if let Some(v) = get("connected_clients") {
                self.clients.set(v);
            }
            if let Some(v) = get("instantaneous_ops_per_sec") {
                self.ops.set(v);
            }
            if let Some(v) = get("total_error_replies") {
                self.error_replies.absolute(v as u64);
            }
            if let Some(v) = get("evicted_keys") {
                self.evicted.absolute(v as u64);
            }
        })
    }
}

/// `key:value` lines of an `INFO` answer (section headers and blank lines skipped).
pub(crate) fn parse_info(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim_end_matches('\r').split_once(':'))
        .collect()
}

impl Dependency {
    /// Watches a Redis server (feature `redis`): `PING` as its readiness check, and from its
    /// `INFO`, read on qiflow's worker every [`SAMPLE_EVERY`](super::SAMPLE_EVERY), the gauges
    /// `redis_memory_used_bytes`, `redis_memory_max_bytes` (0: no `maxmemory`),
    /// `redis_connected_clients`, `redis_instantaneous_ops_per_sec`, and the counters
    /// `redis_error_replies_total` and `redis_evicted_keys_total`, each with `pool` = this
    /// dependency's name.
    ///
    /// ```no_run
    /// # fn demo(observer: qiflow_core::Observer) -> Result<(), redis::RedisError> {
    /// use qiflow_core::dependency::DependencyKind;
    /// let client = redis::Client::open("redis://127.0.0.1:6379/")?;
    /// observer
    ///     .dependency("cache", DependencyKind::Redis)
    ///     .redis(&client);
    /// # Ok(())
    /// # }
    /// ```
    pub fn redis(&self, client: &redis::Client) -> &Self {
        let m = &self.inner.metrics;
        let labels = || vec![Label::new("pool", self.inner.name.clone())];
        let link = Arc::new(Link {
            client: client.clone(),
            connection: tokio::sync::Mutex::new(None),
        });
        *super::lock(&self.inner.remote) = Some(Arc::new(Info {
            link: link.clone(),
            used_memory: m.gauge("redis_memory_used_bytes", labels()),
            max_memory: m.gauge("redis_memory_max_bytes", labels()),
            clients: m.gauge("redis_connected_clients", labels()),
            ops: m.gauge("redis_instantaneous_ops_per_sec", labels()),
            error_replies: m.counter("redis_error_replies_total", labels()),
            evicted: m.counter("redis_evicted_keys_total", labels()),
        }));
        self.readiness(move || {
            let link = link.clone();
            async move {
                match link.query::<String>("PING").await {
                    Ok(pong) if pong == "PONG" => CheckResult::healthy(),
                    Ok(other) => CheckResult::unhealthy(format!("PING answered {other:?}")),
                    Err(e) => CheckResult::unhealthy(format!("PING failed: {e}")),
                }
            }
        })
    }

    /// Reads the figures of [`Dependency::redis`] now (the worker does it every
    /// [`SAMPLE_EVERY`](super::SAMPLE_EVERY)).
    pub async fn sample_remote(&self) {
        let remote = super::lock(&self.inner.remote).clone();
        if let Some(remote) = remote {
            let _ = tokio::time::timeout(super::REMOTE_SAMPLE_TIMEOUT, remote.sample()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn info_lines_are_split_and_headers_skipped() {
        let text = "# Memory\r\nused_memory:1048576\r\nmaxmemory:0\r\n\r\n# Clients\r\nconnected_clients:3\r\n";
        assert_eq!(
            super::parse_info(text),
            [
                ("used_memory", "1048576"),
                ("maxmemory", "0"),
                ("connected_clients", "3")
            ]
        );
    }
}
