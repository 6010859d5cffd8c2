//! sqlx (feature `sqlx`): any `sqlx::Pool`'s figures and a ping as its readiness check, in one
//! call, [`Dependency::sqlx`]; its errors classified.

use sqlx::{Connection, Database, Pool};

use super::{Dependency, ErrorClass, PoolSample};
use crate::health::CheckResult;

impl Dependency {
    /// Watches a `sqlx::Pool` of any database (feature `sqlx`): its connections
    /// (`Pool::size`, `Pool::num_idle`, `max_connections`) and, as its waiters, the callers
    /// inside [`Dependency::acquire`] (sqlx keeps no count of its own); and a readiness check
    /// that takes a connection and pings it (`Connection::ping`).
    ///
    /// Time statements with [`Dependency::query`] around the sqlx future, and acquires with
    /// [`Dependency::acquire`] around `pool.acquire()` when the code holds a connection:
    ///
    /// ```no_run
    /// # async fn demo(observer: qiflow_core::Observer, pool: sqlx::PgPool) -> Result<(), sqlx::Error> {
    /// use qiflow_core::dependency::DependencyKind;
    ///
    /// let db = observer.dependency("main-db", DependencyKind::Postgres);
    /// db.sqlx(&pool);
    /// let sql = "SELECT name FROM users WHERE id = $1";
    /// let name: (String,) = db.query(sql, sqlx::query_as(sql).bind(7_i64).fetch_one(&pool)).await?;
    /// let mut conn = db.acquire(pool.acquire()).await?;
    /// # let _ = (name, &mut conn);
    /// # Ok(())
    /// # }
    /// ```
    pub fn sqlx<DB: Database>(&self, pool: &Pool<DB>) -> &Self {
        let stats = pool.clone();
        // sqlx tells no waiters: the sample's are the callers inside `acquire`.
        self.pool(move || {
            let size = u64::from(stats.size());
            let idle = (stats.num_idle() as u64).min(size);
            PoolSample::new(
                idle,
                size - idle,
                u64::from(stats.options().get_max_connections()),
                0,
            )
        });
        let pool = pool.clone();
        self.readiness(move || {
            let pool = pool.clone();
            async move {
                let mut conn = match pool.acquire().await {
                    Ok(conn) => conn,
                    Err(e) => return CheckResult::unhealthy(format!("no connection: {e}")),
                };
                match conn.ping().await {
                    Ok(()) => CheckResult::healthy(),
                    Err(e) => CheckResult::unhealthy(format!("ping failed: {e}")),
                }
            }
        })
    }
}

/// The class of a `sqlx::Error`, when `e` is one.
pub(super) fn class_of(e: &(dyn std::error::Error + 'static)) -> Option<ErrorClass> {
    use sqlx::Error as E;
    let e = e.downcast_ref::<E>()?;
    Some(match e {
        E::PoolTimedOut => ErrorClass::Timeout,
        // An I/O error that names no time-out is the connection's.
        E::Io(io) => match ErrorClass::of(io) {
            ErrorClass::Timeout => ErrorClass::Timeout,
            _ => ErrorClass::Connection,
        },
        E::PoolClosed | E::WorkerCrashed | E::Tls(_) | E::Protocol(_) => ErrorClass::Connection,
        _ => ErrorClass::Query,
    })
}

/// Whether `e` is sqlx's "no connection free in time".
pub(super) fn is_acquire_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        e.downcast_ref::<sqlx::Error>(),
        Some(sqlx::Error::PoolTimedOut)
    )
}
