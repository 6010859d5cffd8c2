//! Outgoing HTTP calls through `reqwest-middleware` (feature `reqwest-middleware`):
//! [`HttpClientMiddleware`].

use std::collections::HashMap;
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
    series: Arc<RwLock<HashMap<SeriesKey, Histogram>>>,
}

/// A series of `http_client_request_duration_seconds`: (server_address, method, status).
type SeriesKey = (String, String, String);

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
            series: Arc::new(RwLock::new(HashMap::new())),
        }
    }
}

impl HttpClientMiddleware {
    fn histogram(&self, server: &str, method: &str, status: &str) -> Histogram {
        let key = (server.to_owned(), method.to_owned(), status.to_owned());
        if let Some(h) = self
            .series
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return h.clone();
        }
        let mut series = self
            .series
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = if series.len() >= MAX_OPERATIONS && !series.contains_key(&key) {
            ("other".to_owned(), key.1, key.2)
        } else {
            key
        };
        series
            .entry(key.clone())
            .or_insert_with(|| {
                self.dependency.inner.metrics.histogram(
                    "http_client_request_duration_seconds",
                    vec![
                        Label::new("server_address", key.0),
                        Label::new("method", key.1),
                        Label::new("status", key.2),
                    ],
                )
            })
            .clone()
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
        let method = req.method().as_str().to_owned();
        let server = match (req.url().host_str(), req.url().port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => "unknown".to_owned(),
        };
        let started = Instant::now();
        let result = next.run(req, extensions).await;
        let took = started.elapsed();
        let (status, class) = match &result {
            Ok(response) if response.status().is_server_error() => (
                response.status().as_u16().to_string(),
                Some(ErrorClass::Query),
            ),
            Ok(response) => (response.status().as_u16().to_string(), None),
            Err(e) => {
                let class = match e {
                    reqwest_middleware::Error::Reqwest(e) if e.is_timeout() => ErrorClass::Timeout,
                    reqwest_middleware::Error::Reqwest(e) if e.is_connect() => {
                        ErrorClass::Connection
                    }
                    reqwest_middleware::Error::Reqwest(e) => ErrorClass::of(e),
                    reqwest_middleware::Error::Middleware(_) => ErrorClass::Query,
                };
                ("error".to_owned(), Some(class))
            }
        };
        self.histogram(&server, &method, &status)
            .record(took.as_secs_f64());
        self.dependency.record(&method, None, took, class);
        result
    }
}
