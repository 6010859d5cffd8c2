use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::Error;
use actix_web::dev::ServiceResponse;
use actix_web::http::header::HeaderValue;
use pin_project_lite::pin_project;
use qiflow_core::capture::ErrorDetail;
use qiflow_core::request::{InFlight, RequestOutcome};

use crate::request::{Panicked, REQUEST_ID, TRACEPARENT, panic_message, response_traceparent};

pin_project! {
    /// The response future of [`ObserveMiddleware`](crate::ObserveMiddleware).
    ///
    /// Dropped before it resolves (the client went away), it counts a client disconnect.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        in_flight: Option<InFlight>,
        request_id: Option<HeaderValue>,
        // The response's `traceparent` (`[tracing] respond = true`).
        traceparent: Option<HeaderValue>,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, in_flight: InFlight, request_id: Option<HeaderValue>) -> Self {
        let traceparent = response_traceparent(&in_flight);
        Self {
            inner: Some(inner),
            in_flight: Some(in_flight),
            request_id,
            traceparent,
        }
    }

    /// A future that only forwards `inner` (a request to qiflow's own endpoints).
    pub(crate) fn passthrough(inner: F) -> Self {
        Self {
            inner: Some(inner),
            in_flight: None,
            request_id: None,
            traceparent: None,
        }
    }

    /// A future that answers 500 at once (the inner `call` panicked; already reported).
    pub(crate) fn panicked(
        request_id: Option<HeaderValue>,
        traceparent: Option<HeaderValue>,
    ) -> Self {
        Self {
            inner: None,
            in_flight: None,
            request_id,
            traceparent,
        }
    }
}

impl<F, B> Future for ResponseFuture<F>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
    type Output = Result<ServiceResponse<B>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(Err(Panicked {
                request_id: this.request_id.take(),
                traceparent: this.traceparent.take(),
            }
            .into()));
        };
        let polled = {
            let _enter = this.in_flight.as_ref().map(|f| f.span().enter());
            std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx)))
        };
        let result = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(Ok(mut response))) => {
                let mut outcome = RequestOutcome::new(response.status().as_u16());
                if let Some(error) = response.response().error() {
                    outcome = outcome.with_error(actix_error_detail(error));
                }
                if let Some(id) = this.request_id.take()
                    && !response.headers().contains_key(&REQUEST_ID)
                {
                    response.headers_mut().insert(REQUEST_ID, id);
                }
                if let Some(value) = this.traceparent.take() {
                    response.headers_mut().insert(TRACEPARENT, value);
                }
                if let Some(in_flight) = this.in_flight.take() {
                    in_flight.finish(outcome);
                }
                Ok(response)
            }
            Ok(Poll::Ready(Err(error))) => {
                let status = error.as_response_error().status_code().as_u16();
                if let Some(in_flight) = this.in_flight.take() {
                    in_flight
                        .finish(RequestOutcome::new(status).with_error(actix_error_detail(&error)));
                }
                Err(error)
            }
            Err(panic) => {
                let message = panic_message(&*panic);
                {
                    let _enter = this.in_flight.as_ref().map(|f| f.span().enter());
                    tracing::error!(target: "qiflow::panic", panic = %message, "request handler panicked");
                }
                if let Some(in_flight) = this.in_flight.take() {
                    in_flight.finish(RequestOutcome::panicked(message));
                }
                Err(Panicked {
                    request_id: this.request_id.take(),
                    traceparent: this.traceparent.take(),
                }
                .into())
            }
        };
        this.inner.set(None);
        Poll::Ready(result)
    }
}

/// An actix-web error as a chain of one: its `Display` text, and its type as its `Debug` output
/// names it (actix-web erases the concrete type).
fn actix_error_detail(error: &actix_web::Error) -> ErrorDetail {
    let debug = format!("{:?}", error.as_response_error());
    ErrorDetail::message(
        qiflow_core::capture::type_from_debug(&debug).as_deref(),
        error.to_string(),
    )
}
