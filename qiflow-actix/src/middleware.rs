use std::panic::AssertUnwindSafe;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, forward_ready};
use actix_web::http::header::HeaderValue;
use actix_web::{Error, HttpMessage};
use bytes::Bytes;
use qiflow_core::Observer;
use qiflow_core::request::RequestOutcome;

use crate::extract::RequestId;
use crate::future::ResponseFuture;
use crate::request::{REQUEST_ID, panic_message, request_info};

/// The service [`Observe`](crate::Observe) wraps around the inner one.
pub struct ObserveMiddleware<S> {
    service: S,
    observer: Observer,
}

impl<S> std::fmt::Debug for ObserveMiddleware<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObserveMiddleware")
            .field("observer", &self.observer)
            .finish_non_exhaustive()
    }
}

impl<S> ObserveMiddleware<S> {
    pub(crate) fn new(service: S, observer: Observer) -> Self {
        Self { service, observer }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.service
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.service
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.service
    }
}

impl<S, B> Service<ServiceRequest> for ObserveMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    forward_ready!(service);

    fn call(&self, mut request: ServiceRequest) -> Self::Future {
        if self.observer.is_admin_path(request.path()) {
            return ResponseFuture::passthrough(self.service.call(request));
        }
        let in_flight = {
            let info = request_info(&request);
            let headers = request.headers();
            self.observer.begin_request_with_headers(info, |name| {
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
        // The `Qiflow` extractor finds the observer in the app data when `configure` put it
        // there; only otherwise does each request carry a copy.
        let in_app_data = request
            .app_data::<Observer>()
            .is_some_and(|o| o.ptr_eq(&self.observer));
        {
            let mut extensions = request.extensions_mut();
            extensions.insert(RequestId(in_flight.id().clone()));
            if !in_app_data {
                extensions.insert(self.observer.clone());
            }
        }
        let called = {
            let _enter = in_flight.span().enter();
            std::panic::catch_unwind(AssertUnwindSafe(|| self.service.call(request)))
        };
        match called {
            Ok(future) => ResponseFuture::new(future, in_flight, header),
            Err(panic) => {
                let message = panic_message(&*panic);
                {
                    let _enter = in_flight.span().enter();
                    tracing::error!(target: "qiflow::panic", panic = %message, "request handler panicked");
                }
                let traceparent = crate::request::response_traceparent(&in_flight);
                in_flight.finish(RequestOutcome::panicked(message));
                ResponseFuture::panicked(header, traceparent)
            }
        }
    }
}
