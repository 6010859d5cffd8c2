//! `deadpool-postgres` (feature `postgres`): a pool's figures and its readiness ping in one call,
//! [`Dependency::deadpool_postgres`].

use deadpool_postgres::{Pool, PoolError};

use super::{Dependency, ErrorClass, PoolSample, PoolStats};
use crate::health::CheckResult;

impl PoolStats for Pool {
    fn sample(&self) -> PoolSample {
        let s = self.status();
        let idle = s.available as u64;
        PoolSample::new(
            idle,
            (s.size as u64).saturating_sub(idle),
            s.max_size as u64,
            s.waiting as u64,
        )
    }
}

impl Dependency {
    /// Watches a `deadpool_postgres::Pool` (feature `postgres`): its figures
    /// ([`Dependency::pool`]) and a readiness check that takes a connection and runs
    /// `SELECT 1`.
    ///
    /// ```no_run
    /// # fn demo(observer: qiflow_core::Observer, pool: deadpool_postgres::Pool) {
    /// use qiflow_core::dependency::DependencyKind;
    /// observer
    ///     .dependency("main-db", DependencyKind::Postgres)
    ///     .deadpool_postgres(&pool);
    /// # }
    /// ```
    pub fn deadpool_postgres(&self, pool: &Pool) -> &Self {
        self.pool(pool.clone());
        let pool = pool.clone();
        self.readiness(move || {
            let pool = pool.clone();
            async move {
                let client = match pool.get().await {
                    Ok(client) => client,
                    Err(e) => return CheckResult::unhealthy(format!("no connection: {e}")),
                };
                match client.simple_query("SELECT 1").await {
                    Ok(_) => CheckResult::healthy(),
                    Err(e) => CheckResult::unhealthy(format!("SELECT 1 failed: {e}")),
                }
            }
        })
    }
}

/// The class of a `tokio_postgres` or deadpool error, when `e` is one.
pub(super) fn class_of(e: &(dyn std::error::Error + 'static)) -> Option<ErrorClass> {
    if let Some(pg) = e.downcast_ref::<tokio_postgres::Error>() {
        if pg.is_closed() {
            return Some(ErrorClass::Connection);
        }
        if pg.code().is_some() {
            return Some(ErrorClass::Query);
        }
        return None; // look at its source (an I/O error names the class)
    }
    if let Some(pool) = e.downcast_ref::<PoolError>() {
        return match pool {
            PoolError::Timeout(_) => Some(ErrorClass::Timeout),
            PoolError::Closed | PoolError::NoRuntimeSpecified => Some(ErrorClass::Connection),
            PoolError::Backend(pg) => class_of(pg).or(Some(ErrorClass::Connection)),
            PoolError::PostCreateHook(_) => Some(ErrorClass::Connection),
        };
    }
    None
}

/// Whether `e` is deadpool's "no connection free in time".
pub(super) fn is_acquire_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    matches!(e.downcast_ref::<PoolError>(), Some(PoolError::Timeout(_)))
}
