//! [`Admin`]: a tower service answering qiflow's operator surface
//! ([`Observer::admin`](qiflow_core::Observer::admin)) for `http` requests.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use qiflow_core::Observer;
use qiflow_core::admin::{AdminRequest, AdminResponse, MAX_BODY};

/// A [`tower::Service`] that answers qiflow's operator endpoints: `/metrics`, the health
/// endpoints, `/qiflow/` and `/qiflow/api/*` (route the paths for which
/// [`Observer::is_admin_path`] holds to it). Authorization is the core's (see
/// [`qiflow_core::admin`]); this only translates.
///
/// ```
/// use http::Request;
/// use http_body_util::{BodyExt, Empty};
/// use tower::ServiceExt;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let (observer, _guard) = qiflow_core::Observer::builder(qiflow_core::test::quiet_config())
///     .install_global(false)
///     .build()
///     .unwrap();
/// let admin = qiflow_tower::Admin::new(observer);
/// let request = Request::get("/qiflow/api/errors").body(Empty::<bytes::Bytes>::new()).unwrap();
/// let response = admin.oneshot(request).await.unwrap();
/// assert_eq!(response.status(), 401); // no token
/// # });
/// ```
#[derive(Clone)]
pub struct Admin {
    observer: Observer,
    trusted: bool,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// The operator surface on the application's listener: tokens as configured.
    pub fn new(observer: Observer) -> Self {
        Self {
            observer,
            trusted: false,
        }
    }

    /// The operator surface on the operator listener (`[admin] listen`), whose requests are
    /// trusted: no token is asked. Serve it only on that listener.
    pub fn operator_listener(observer: Observer) -> Self {
        Self {
            observer,
            trusted: true,
        }
    }
}

impl<B> tower::Service<Request<B>> for Admin
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let observer = self.observer.clone();
        let trusted = self.trusted;
        Box::pin(async move { Ok(answer(&observer, request, trusted).await) })
    }
}

/// Reads `request` (its body up to [`MAX_BODY`]), asks [`Observer::admin`] and returns its
/// answer as an `http` response. `trusted`: the request came in on the operator listener.
pub async fn answer<B>(
    observer: &Observer,
    request: Request<B>,
    trusted: bool,
) -> Response<Full<Bytes>>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = request.into_parts();
    let mut admin = admin_request(&parts, trusted);
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => admin = admin.body(collected.to_bytes().to_vec()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => admin = admin.body_too_large(),
        Err(e) => {
            let mut response = Response::new(Full::new(Bytes::from(format!(
                "{{\"error\":\"cannot read the request body: {}\"}}",
                serde_json::Value::String(e.to_string())
            ))));
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return response;
        }
    }
    into_response(observer.admin(admin).await)
}

/// The core's request from an `http` request head (the body is added by the caller). The
/// client's address is taken from a [`std::net::SocketAddr`] in the request's extensions, when
/// the server put one there.
pub fn admin_request(parts: &http::request::Parts, trusted: bool) -> AdminRequest {
    let mut admin = AdminRequest::new(parts.method.as_str(), parts.uri.path())
        .query(parts.uri.query())
        .trusted(trusted)
        .client_ip(
            parts
                .extensions
                .get::<std::net::SocketAddr>()
                .map(|addr| addr.ip()),
        );
    for (name, value) in &parts.headers {
        if let Ok(value) = value.to_str() {
            admin = admin.header(name.as_str(), value);
        }
    }
    admin
}

/// An `http` response from the core's answer.
pub fn into_response(answer: AdminResponse) -> Response<Full<Bytes>> {
    let (status, headers, body) = answer.into_parts();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}
