use std::borrow::Cow;
use std::sync::Arc;

use qiflow_core::Observer;

use crate::service::{Observe, Shared};

/// Finds the route template of a request from its extensions (axum puts `MatchedPath` there).
pub type RouteFn = Arc<dyn Fn(&http::Extensions) -> Option<Cow<'_, str>> + Send + Sync>;

/// A [`tower::Layer`] that observes every request with qiflow: see the [crate docs](crate).
#[derive(Clone)]
pub struct ObserveLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ObserveLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObserveLayer")
            .field("observer", &self.shared.observer)
            .field("route", &self.shared.route.is_some())
            .field("error_body", &self.shared.make_body.is_some())
            .finish()
    }
}

impl ObserveLayer {
    /// A layer reporting to `observer`. Without [`ObserveLayer::route`], every request has
    /// `route="unmatched"` (plain tower has no routes).
    pub fn new(observer: Observer) -> Self {
        Self {
            shared: Arc::new(Shared {
                observer,
                route: None,
                make_body: None,
            }),
        }
    }

    /// How to find a request's route template (the metrics' `route` label). Framework adapters
    /// set this; with plain hyper, give the template your own router matched, never the raw path.
    #[must_use]
    pub fn route(
        mut self,
        route: impl Fn(&http::Extensions) -> Option<Cow<'_, str>> + Send + Sync + 'static,
    ) -> Self {
        self.shared = Arc::new(Shared {
            observer: self.shared.observer.clone(),
            route: Some(Arc::new(route)),
            make_body: self.shared.make_body,
        });
        self
    }

    /// The response body type `B` of the inner service, for the `500 Internal Server Error` the
    /// middleware answers itself after a panic: its body is then qiflow's JSON
    /// (`{"error":"internal server error","request_id":"…"}`,
    /// [`internal_error_body`](qiflow_core::request::internal_error_body)), made with
    /// `B::from`. Framework adapters set this (`qiflow_axum::layer` sets axum's `Body`).
    ///
    /// Defaults to the body types qiflow knows: `String`, `Vec<u8>`, `Bytes` and
    /// `http_body_util::Full<Bytes>`; with any other body type the 500 has an empty body (still
    /// with `x-request-id`).
    ///
    /// ```
    /// use qiflow_tower::ObserveLayer;
    ///
    /// # fn build(observer: qiflow_core::Observer) {
    /// let layer = ObserveLayer::new(observer).error_body::<String>();
    /// # let _ = layer; }
    /// ```
    #[must_use]
    pub fn error_body<B: From<String> + Send + 'static>(mut self) -> Self {
        self.shared = Arc::new(Shared {
            observer: self.shared.observer.clone(),
            route: self.shared.route.clone(),
            make_body: Some(|json| Box::new(B::from(json))),
        });
        self
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe::new(inner, self.shared.clone())
    }
}
