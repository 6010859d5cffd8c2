//! Outgoing HTTP calls through `reqwest-middleware` (feature `reqwest-middleware`):
//! [`HttpClientMiddleware`].

use std::sync::{Arc, RwLock};
use std::time::Instant;

use metrics::{Histogram, Label};

use super::{Dependency, ErrorClass, MAX_OPERATIONS};

/// The `reqwest-middleware` middleware of a dependency called over HTTP (feature
/// `reqwest-middleware`). Each call:
///
/// - gets the trace context of the request the caller is in (`traceparent`, and `tracestate`
///   when it carried one: [`crate::propagation::inject`]), unless the call sets its own;
/// - is timed on `http_client_request_duration_seconds{server_address, method, status}` (the
///   OpenTelemetry HTTP client metric; `status` is the response's code, or `error` when there
///   was none; the first 64 (server, method, status) triples have their own series, later ones
///   are recorded as `server_address="other"`);
/// - counts on its [`Dependency`] under the method as the operation: a 5xx answer or no answer
///   is a failed call (a time-out is `timeout`, a refused or broken connection `connection`,
///   a 5xx `query`), and a slow one is logged and alerted as every dependency's.
///
/// ```no_run
/// # fn demo(observer: qiflow_core::Observer) {
/// use qiflow_core::dependency::DependencyKind;
///
/// let payments = observer.dependency("payments-api", DependencyKind::Http);
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(payments.http_middleware())
///     .build();
/// # drop(client);
/// # }
/// ```
#[derive(Clone)]
pub struct HttpClientMiddleware {
    dependency: Dependency,
    series: Arc<RwLock<Vec<Series>>>,
}

/// The host of the series past [`MAX_OPERATIONS`].
const OTHER: &str = "other";

/// A series of `http_client_request_duration_seconds`. At most [`MAX_OPERATIONS`] (plus their
/// `other` folds) per middleware, searched in order: a call to a known server finds its series
/// under the read lock without allocating (a new triple takes the write lock once).
struct Series {
    /// The host, or `other` past the bound.
    host: Arc<str>,
    port: Option<u16>,
    method: reqwest::Method,
    /// The response's status, or 0 when there was none.
    status: u16,
    histogram: Histogram,
}

impl Series {
    fn is(&self, host: &str, port: Option<u16>, method: &reqwest::Method, status: u16) -> bool {
        self.status == status && self.port == port && self.method == method && *self.host == *host
    }
}

impl std::fmt::Debug for HttpClientMiddleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClientMiddleware")
            .field("dependency", &self.dependency.name())
            .finish_non_exhaustive()
    }
}

impl Dependency {
    /// The `reqwest-middleware` middleware recording this dependency's calls (feature
    /// `reqwest-middleware`; see [`HttpClientMiddleware`]).
    pub fn http_middleware(&self) -> HttpClientMiddleware {
        HttpClientMiddleware {
            dependency: self.clone(),
            series: Arc::new(RwLock::new(Vec::new())),
        }
    }
}

impl HttpClientMiddleware {
    fn histogram(
        &self,
        host: &str,
        port: Option<u16>,
        method: &reqwest::Method,
        status: u16,
    ) -> Histogram {
        let find = |series: &[Series], host: &str, port: Option<u16>| {
            series
                .iter()
                .find(|s| s.is(host, port, method, status))
                .map(|s| s.histogram.clone())
        };
        let read = self
            .series
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(h) = find(&read, host, port) {
            return h;
        }
        // Past the bound, a new triple folds into `other` without the write lock, once that
        // series exists.
        if read.len() >= MAX_OPERATIONS
            && let Some(h) = find(&read, OTHER, None)
        {
            return h;
        }
        drop(read);
        let mut series = self
            .series
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(h) = find(&series, host, port) {
            return h;
        }
        let (host, port) = if series.len() >= MAX_OPERATIONS {
            (OTHER, None)
        } else {
            (host, port)
        };
        if let Some(h) = find(&series, host, port) {
            return h;
        }
        let server_address = match port {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let status_label = if status == 0 {
            "error".to_owned()
        } else {
            status.to_string()
        };
        let histogram = self.dependency.inner.metrics.histogram(
            "http_client_request_duration_seconds",
            vec![
                Label::new("server_address", server_address),
                Label::new("method", method.as_str().to_owned()),
                Label::new("status", status_label),
            ],
        );
        series.push(Series {
            host: Arc::from(host),
            port,
            method: method.clone(),
            status,
            histogram: histogram.clone(),
        });
        histogram
    }

    /// The host of a call, shared with a series that has it already: a call to a known server
    /// allocates nothing; past the bound, an unknown one is `other`.
    fn host(&self, host: &str) -> Arc<str> {
        let series = self
            .series
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(known) = series.iter().find(|s| *s.host == *host) {
            return known.host.clone();
        }
        if series.len() >= MAX_OPERATIONS
            && let Some(other) = series.iter().find(|s| &*s.host == OTHER)
        {
            return other.host.clone();
        }
        Arc::from(host)
    }
}

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for HttpClientMiddleware {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        if !req.headers().contains_key(crate::propagation::TRACEPARENT) {
            crate::propagation::inject(req.headers_mut());
        }
        let method = req.method().clone();
        let url = req.url();
        let host = self.host(url.host_str().unwrap_or("unknown"));
        let port = url.port();
        let started = Instant::now();
        let result = next.run(req, extensions).await;
        let took = started.elapsed();
        let (status, class) = match &result {
            Ok(response) => (
                response.status().as_u16(),
                response
                    .status()
                    .is_server_error()
                    .then_some(ErrorClass::Query),
            ),
            Err(e) => {
                let class = match e {
                    reqwest_middleware::Error::Reqwest(e) if e.is_timeout() => ErrorClass::Timeout,
                    reqwest_middleware::Error::Reqwest(e) if e.is_connect() => {
                        ErrorClass::Connection
                    }
                    reqwest_middleware::Error::Reqwest(e) => ErrorClass::of(e),
                    reqwest_middleware::Error::Middleware(_) => ErrorClass::Query,
                };
                (0, Some(class))
            }
        };
        self.histogram(&host, port, &method, status)
            .record(took.as_secs_f64());
        self.dependency.record(method.as_str(), None, took, class);
        result
    }
}
