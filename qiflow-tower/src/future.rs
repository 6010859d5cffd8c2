use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Response, StatusCode};
use pin_project_lite::pin_project;
use qiflow_core::capture::ErrorDetail;
use qiflow_core::request::{InFlight, RequestOutcome};

use crate::request::{HandlerError, REQUEST_ID};

pin_project! {
    /// The response future of [`Observe`](crate::Observe).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        in_flight: Option<InFlight>,
        request_id: Option<HeaderValue>,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, in_flight: InFlight, request_id: Option<HeaderValue>) -> Self {
        Self {
            inner: Some(inner),
            in_flight: Some(in_flight),
            request_id,
        }
    }

    /// The inner future, unobserved (qiflow's own endpoints).
    pub(crate) fn passthrough(inner: F) -> Self {
        Self {
            inner: Some(inner),
            in_flight: None,
            request_id: None,
        }
    }

    /// A future that answers 500 at once (the inner `call` panicked).
    pub(crate) fn internal_error(request_id: Option<HeaderValue>) -> Self {
        Self {
            inner: None,
            in_flight: None,
            request_id,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(Ok(internal_error(this.request_id.take())));
        };
        let polled = {
            let _enter = this.in_flight.as_ref().map(|f| f.span().enter());
            std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx)))
        };
        let result = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(Ok(mut response))) => {
                let mut outcome = RequestOutcome::new(response.status().as_u16());
                if let Some(error) = response.extensions().get::<HandlerError>() {
                    outcome = outcome.with_error(error.detail());
                }
                if let Some(id) = this.request_id.take() {
                    response.headers_mut().entry(REQUEST_ID).or_insert(id);
                }
                if let Some(f) = this.in_flight.take() {
                    f.finish(outcome);
                }
                Ok(response)
            }
            Ok(Poll::Ready(Err(e))) => {
                if let Some(f) = this.in_flight.take() {
                    f.finish(RequestOutcome::new(500).with_error(ErrorDetail::message(
                        Some("ServiceError"),
                        "the inner service returned an error",
                    )));
                }
                Err(e)
            }
            Err(panic) => {
                let message = panic_message(&*panic);
                {
                    let _enter = this.in_flight.as_ref().map(|f| f.span().enter());
                    tracing::error!(target: "qiflow::panic", panic = %message, "request handler panicked");
                }
                if let Some(f) = this.in_flight.take() {
                    f.finish(RequestOutcome::panicked(message));
                }
                Ok(internal_error(this.request_id.take()))
            }
        };
        this.inner.set(None);
        Poll::Ready(result)
    }
}

pub(crate) use qiflow_core::request::panic_message;

/// An empty 500 response, with the request id when known.
pub(crate) fn internal_error<B: Default>(request_id: Option<HeaderValue>) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    if let Some(id) = request_id {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    response
}
