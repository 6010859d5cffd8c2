//! bb8 (feature `bb8`): any `bb8::Pool`'s figures, its own acquire totals and a readiness check,
//! in one call, [`Dependency::bb8`].

use bb8::{ManageConnection, Pool, RunError};

use super::{AcquireTotals, Dependency, PoolSample, PoolStats};
use crate::health::CheckResult;

/// A bb8 pool's figures. Its waiters are left at 0: bb8 counts a `get` as started before it
/// waits and as done when it ends, so every `get` dropped while waiting (a cancelled request, a
/// `timeout` around it) stays "pending" for good. The callers inside
/// [`Dependency::acquire`] are counted instead.
impl<M: ManageConnection> PoolStats for Pool<M> {
    fn sample(&self) -> PoolSample {
        let state = self.state();
        let s = &state.statistics;
        let idle = u64::from(state.idle_connections);
        PoolSample::new(
            idle,
            u64::from(state.connections).saturating_sub(idle),
            u64::from(self.config().max_size),
            0,
        )
        .with_acquires(AcquireTotals::new(
            s.get_direct,
            s.get_waited,
            s.get_timed_out,
            s.get_wait_time,
        ))
    }
}

impl Dependency {
    /// Watches a `bb8::Pool` of any connection manager (feature `bb8`): its connections, and
    /// its own acquire totals, which feed `db_client_connection_wait_time_seconds` and saturate
    /// the pool on a timed-out `get` with no wrapper around the `get`s
    /// ([`PoolSample::with_acquires`]); its waiters are the callers inside
    /// [`Dependency::acquire`] (bb8's own count drifts up with every cancelled `get`); and a
    /// readiness check that takes a connection from the pool, which bb8 validates with the
    /// manager's `is_valid` (a `SELECT`, a `PING`) while `test_on_check_out` is on, as it is by
    /// default.
    ///
    /// ```no_run
    /// # fn demo<M: bb8::ManageConnection>(observer: qiflow_core::Observer, pool: bb8::Pool<M>) {
    /// use qiflow_core::dependency::DependencyKind;
    /// observer
    ///     .dependency("main-db", DependencyKind::Postgres)
    ///     .bb8(&pool);
    /// # }
    /// ```
    pub fn bb8<M: ManageConnection>(&self, pool: &Pool<M>) -> &Self {
        self.pool(pool.clone());
        let pool = pool.clone();
        self.readiness(move || {
            let pool = pool.clone();
            async move {
                match pool.get().await {
                    Ok(_) => CheckResult::healthy(),
                    Err(RunError::TimedOut) => CheckResult::unhealthy(
                        "no valid connection within bb8's connection_timeout",
                    ),
                    Err(RunError::User(e)) => {
                        CheckResult::unhealthy(format!("no connection: {e:?}"))
                    }
                }
            }
        })
    }
}
