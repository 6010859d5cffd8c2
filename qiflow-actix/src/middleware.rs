use std::panic::AssertUnwindSafe;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, forward_ready};
use actix_web::http::header::HeaderValue;
use actix_web::{Error, HttpMessage};
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
        if self.observer.is_internal_path(request.path()) {
            return ResponseFuture::passthrough(self.service.call(request));
        }
        let mut info = request_info(&request);
        if let Some(auto) = self.observer.auto_audit().filter(|a| a.wants_actor(&info)) {
            let headers = request.headers();
            info.actor = auto.actor(&|name| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            });
        }
        let in_flight = self.observer.begin_request(info);
        let id = in_flight.request_id();
        // Always valid: a sane incoming id is visible ASCII, a generated one is a UUID.
        let header = HeaderValue::from_str(id).ok();
        if let Some(value) = &header {
            request.headers_mut().insert(REQUEST_ID, value.clone());
        }
        {
            let mut extensions = request.extensions_mut();
            extensions.insert(RequestId(id.into()));
            extensions.insert(self.observer.clone());
        }
        let span = in_flight.span().clone();
        let called = {
            let _enter = span.enter();
            std::panic::catch_unwind(AssertUnwindSafe(|| self.service.call(request)))
        };
        match called {
            Ok(future) => ResponseFuture::new(future, in_flight, span, header),
            Err(panic) => {
                let message = panic_message(&*panic);
                {
                    let _enter = span.enter();
                    tracing::error!(target: "qiflow::panic", panic = %message, "request handler panicked");
                }
                in_flight.finish(RequestOutcome::panicked(message));
                ResponseFuture::panicked(header)
            }
        }
    }
}
