//! bb8 (feature `bb8`): any `bb8::Pool`'s figures, its own acquire totals and a readiness check,
//! in one call, [`Dependency::bb8`].

use bb8::{ManageConnection, Pool, RunError};

use super::{AcquireTotals, Dependency, PoolSample, PoolStats};
use crate::health::CheckResult;

impl<M: ManageConnection> PoolStats for Pool<M> {
    fn sample(&self) -> PoolSample {
        let state = self.state();
        let s = &state.statistics;
        let idle = u64::from(state.idle_connections);
        // bb8 reads its counters one by one: a get completed between two reads can make the
        // completed ones outnumber the started ones for a moment.
        let completed = s.get_direct + s.get_waited + s.get_timed_out;
        PoolSample::new(
            idle,
            u64::from(state.connections).saturating_sub(idle),
            u64::from(self.config().max_size),
            s.get_started.saturating_sub(completed),
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
    /// Watches a `bb8::Pool` of any connection manager (feature `bb8`): its figures, with its
    /// waiters, and its own acquire totals, which feed `db_client_connection_wait_time_seconds`
    /// and saturate the pool on a timed-out `get` with no wrapper around the `get`s
    /// ([`Dependency::pool`], [`PoolSample::with_acquires`]); and a readiness check that takes
    /// a connection from the pool, which bb8 validates with the manager's `is_valid` (a
    /// `SELECT`, a `PING`) while `test_on_check_out` is on, as it is by default.
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
