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
