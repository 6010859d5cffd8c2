use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use qiflow_core::Observer;
use qiflow_core::request::RequestOutcome;

use crate::future::{MakeBody, ResponseFuture};
use crate::layer::RouteFn;
use crate::request::{REQUEST_ID, request_info};

/// The service [`ObserveLayer`](crate::ObserveLayer) wraps around the inner one.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    /// One reference count: axum clones the service for every request.
    shared: Arc<Shared>,
}

/// What every [`Observe`] made by one layer shares.
pub(crate) struct Shared {
    pub(crate) observer: Observer,
    pub(crate) route: Option<RouteFn>,
    /// Makes the body of the middleware's own 500 ([`ObserveLayer::error_body`](crate::ObserveLayer::error_body)).
    pub(crate) make_body: Option<MakeBody>,
}

impl<S> std::fmt::Debug for Observe<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observe").finish_non_exhaustive()
    }
}

impl<S> Observe<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for Observe<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let Shared {
            observer,
            route,
            make_body,
        } = &*self.shared;
        if observer.is_admin_path(request.uri().path()) {
            return ResponseFuture::passthrough(self.inner.call(request));
        }
        let in_flight = {
            let mut info = request_info(&request);
            if let Some(route) = route {
                info.route = route(request.extensions());
            }
            let headers = request.headers();
            observer.begin_request_with_headers(info, |name| {
                headers.get(name).and_then(|v| v.to_str().ok())
            })
        };
        // The header shares the id's bytes. Always valid: a sane incoming id is visible ASCII, a
        // generated one is a UUID.
        let header = HeaderValue::from_maybe_shared(Bytes::from_owner(in_flight.id().clone())).ok();
        if in_flight.id_was_generated()
            && let Some(value) = &header
        {
            request.headers_mut().insert(REQUEST_ID, value.clone());
        }
        request.extensions_mut().insert(in_flight.id().clone());
        let called = {
            let _enter = in_flight.span().enter();
            std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request)))
        };
        match called {
            Ok(future) => ResponseFuture::new(future, in_flight, header, *make_body),
            Err(panic) => {
                let message = crate::future::panic_message(&*panic);
                {
                    let _enter = in_flight.span().enter();
                    tracing::error!(target: "qiflow::panic", panic = %message, "request handler panicked");
                }
                let traceparent = crate::future::response_traceparent(&in_flight);
                in_flight.finish(RequestOutcome::panicked(message));
                ResponseFuture::internal_error(header, traceparent, *make_body)
            }
        }
    }
}
