use std::any::{Any, TypeId};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;
use pin_project_lite::pin_project;
use qiflow_core::capture::ErrorDetail;
use qiflow_core::request::{
    INTERNAL_ERROR_CONTENT_TYPE, InFlight, RequestOutcome, internal_error_body,
};

use crate::request::{HandlerError, REQUEST_ID};

pin_project! {
    /// The response future of [`Observe`](crate::Observe).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        in_flight: Option<InFlight>,
        request_id: Option<HeaderValue>,
        // The response's `traceparent` (`[tracing] respond = true`).
        traceparent: Option<HeaderValue>,
        make_body: Option<MakeBody>,
    }
}

/// Makes a response body of the type the layer was told
/// ([`ObserveLayer::error_body`](crate::ObserveLayer::error_body)) from qiflow's JSON error
/// text. A function pointer: copied into every response future at no cost.
pub(crate) type MakeBody = fn(String) -> Box<dyn Any + Send>;

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(
        inner: F,
        in_flight: InFlight,
        request_id: Option<HeaderValue>,
        make_body: Option<MakeBody>,
    ) -> Self {
        let traceparent = response_traceparent(&in_flight);
        Self {
            inner: Some(inner),
            in_flight: Some(in_flight),
            request_id,
            traceparent,
            make_body,
        }
    }

    /// The inner future, unobserved (qiflow's own endpoints).
    pub(crate) fn passthrough(inner: F) -> Self {
        Self {
            inner: Some(inner),
            in_flight: None,
            request_id: None,
            traceparent: None,
            make_body: None,
        }
    }

    /// A future that answers 500 at once (the inner `call` panicked).
    pub(crate) fn internal_error(
        request_id: Option<HeaderValue>,
        traceparent: Option<HeaderValue>,
        make_body: Option<MakeBody>,
    ) -> Self {
        Self {
            inner: None,
            in_flight: None,
            request_id,
            traceparent,
            make_body,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default + 'static,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            let mut response = internal_error(this.request_id.take(), *this.make_body);
            put_traceparent(&mut response, this.traceparent.take());
            return Poll::Ready(Ok(response));
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
                put_traceparent(&mut response, this.traceparent.take());
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
                let mut response = internal_error(this.request_id.take(), *this.make_body);
                put_traceparent(&mut response, this.traceparent.take());
                Ok(response)
            }
        };
        this.inner.set(None);
        Poll::Ready(result)
    }
}

pub(crate) use qiflow_core::request::panic_message;

/// The `traceparent` header a response carries with `[tracing] respond = true`.
pub(crate) fn response_traceparent(in_flight: &InFlight) -> Option<HeaderValue> {
    in_flight
        .response_traceparent()
        .and_then(|value| HeaderValue::try_from(value).ok())
}

fn put_traceparent<B>(response: &mut Response<B>, traceparent: Option<HeaderValue>) {
    if let Some(value) = traceparent {
        response.headers_mut().insert(TRACEPARENT, value);
    }
}

const TRACEPARENT: http::HeaderName =
    http::HeaderName::from_static(qiflow_core::propagation::TRACEPARENT);

/// The middleware's own 500 (after a panic): qiflow's JSON body with the request id, when the
/// body type can hold it ([`json_body`]), and `x-request-id`; an empty body otherwise.
pub(crate) fn internal_error<B: Default + 'static>(
    request_id: Option<HeaderValue>,
    make_body: Option<MakeBody>,
) -> Response<B> {
    let json = internal_error_body(request_id.as_ref().and_then(|v| v.to_str().ok()));
    let mut response = match json_body::<B>(json, make_body) {
        Some(body) => {
            let mut response = Response::new(body);
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(INTERNAL_ERROR_CONTENT_TYPE),
            );
            response
        }
        None => Response::new(B::default()),
    };
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    if let Some(id) = request_id {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    response
}

/// `json` as a body of type `B`: made by `make_body` when it makes a `B`, else when `B` is one
/// of the body types qiflow knows (`String`, `Vec<u8>`, `Bytes`, `Full<Bytes>`); `None` for
/// any other type.
fn json_body<B: 'static>(json: String, make_body: Option<MakeBody>) -> Option<B> {
    if let Some(make) = make_body
        && let Ok(body) = make(json.clone()).downcast::<B>()
    {
        return Some(*body);
    }
    let wanted = TypeId::of::<B>();
    let body: Box<dyn Any> = if wanted == TypeId::of::<String>() {
        Box::new(json)
    } else if wanted == TypeId::of::<Vec<u8>>() {
        Box::new(json.into_bytes())
    } else if wanted == TypeId::of::<Bytes>() {
        Box::new(Bytes::from(json))
    } else if wanted == TypeId::of::<Full<Bytes>>() {
        Box::new(Full::new(Bytes::from(json)))
    } else {
        return None;
    };
    body.downcast::<B>().ok().map(|body| *body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const JSON: &str = r#"{"error":"internal server error","request_id":"r-1"}"#;

    #[test]
    fn the_known_body_types_hold_the_json_and_others_stay_empty() {
        let id = || Some(HeaderValue::from_static("r-1"));
        let res = internal_error::<String>(id(), None);
        assert_eq!(res.status(), 500);
        assert_eq!(res.body(), JSON);
        assert_eq!(res.headers()["content-type"], "application/json");
        assert_eq!(res.headers()["x-request-id"], "r-1");
        assert_eq!(
            internal_error::<Vec<u8>>(id(), None).body(),
            JSON.as_bytes()
        );
        assert_eq!(internal_error::<Bytes>(id(), None).body(), JSON);
        // A type qiflow does not know: empty, and no content type for a body that is not there.
        #[derive(Default, Debug, PartialEq)]
        struct Opaque(u8);
        let res = internal_error::<Opaque>(id(), None);
        assert_eq!(res.body(), &Opaque(0));
        assert!(!res.headers().contains_key("content-type"));
        assert_eq!(res.headers()["x-request-id"], "r-1");
    }

    #[test]
    fn a_body_type_the_layer_was_told_holds_the_json() {
        #[derive(Default, Debug, PartialEq)]
        struct Told(String);
        impl From<String> for Told {
            fn from(text: String) -> Self {
                Self(text)
            }
        }
        let make: MakeBody = |json| Box::new(Told::from(json));
        let res = internal_error::<Told>(Some(HeaderValue::from_static("r-1")), Some(make));
        assert_eq!(res.body(), &Told(JSON.to_owned()));
        // Told for another type than the service's: the known types still work.
        let res = internal_error::<String>(Some(HeaderValue::from_static("r-1")), Some(make));
        assert_eq!(res.body(), JSON);
    }
}
