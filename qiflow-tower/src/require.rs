//! [`RequireLayer`]: a permission guard in front of a service, deciding with
//! [`Observer::authorize`] (the check and its audit record in one call).

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use qiflow_core::Observer;
use qiflow_core::authz::{Permission, PermissionError, Principal};
use qiflow_core::request::RequestInfo;

use crate::layer::RouteFn;

/// A [`tower::Layer`] that lets a request through only when its [`Principal`] holds a
/// permission (see [`qiflow_core::authz`]).
///
/// The host's authentication puts the [`Principal`] in the request extensions (the way
/// axum-login or a JWT middleware hold their user); the guard asks
/// [`Observer::authorize`], which records a denial (audit record `authz.denied`, a
/// `qiflow::authz` line, `qiflow_authz_decisions_total`). Then:
///
/// - no principal: `401` with `{"error":"unauthenticated","permission":"…","request_id":…}`;
/// - a principal without the permission: `[authz] deny_status` (403) with
///   `{"error":"forbidden","permission":"orders:write","request_id":…}`, naming the missing
///   permission, never the principal's roles;
/// - granted: the inner service is called.
///
/// Put it inside [`ObserveLayer`](crate::ObserveLayer), so a denial is recorded with the
/// request's id and trace. The response body type must be buildable from the JSON text
/// (`B: From<String>`: `String`, `Full<Bytes>`, axum's `Body`).
///
/// ```
/// use qiflow_core::authz::Principal;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let mut config = qiflow_core::test::quiet_config();
/// config.service.state_dir = dir.path().into();
/// config.authz = qiflow_core::config::Loader::new()
///     .toml_str("[authz.roles.clerk]\npermissions = [\"orders:write\"]\n")
///     .load()
///     .unwrap()
///     .authz;
/// let (observer, _guard) = qiflow_core::Observer::builder(config)
///     .install_global(false)
///     .build()
///     .unwrap();
/// let service = ServiceBuilder::new()
///     .layer(qiflow_tower::ObserveLayer::new(observer.clone()))
///     .layer(qiflow_tower::RequireLayer::new(&observer, "orders:write"))
///     .service_fn(|_req: http::Request<String>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::from("created")))
///     });
/// // Authentication (here: none) left no principal: 401.
/// let request = http::Request::post("/orders").body(String::new()).unwrap();
/// let response = service.clone().oneshot(request).await.unwrap();
/// assert_eq!(response.status(), 401);
/// // A clerk may write.
/// let mut request = http::Request::post("/orders").body(String::new()).unwrap();
/// request.extensions_mut().insert(Principal::new("ada").role("clerk"));
/// let response = service.clone().oneshot(request).await.unwrap();
/// assert_eq!(response.status(), 200);
/// // Anyone else may not, and the body says what was missing.
/// let mut request = http::Request::post("/orders").body(String::new()).unwrap();
/// request.extensions_mut().insert(Principal::new("bob"));
/// let response = service.oneshot(request).await.unwrap();
/// assert_eq!(response.status(), 403);
/// assert!(response.body().contains(r#""permission":"orders:write""#));
/// # });
/// ```
#[derive(Clone)]
pub struct RequireLayer {
    shared: Arc<Shared>,
}

struct Shared {
    observer: Observer,
    permission: Permission,
    route: Option<RouteFn>,
}

impl std::fmt::Debug for RequireLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequireLayer")
            .field("permission", &self.shared.permission.as_str())
            .finish_non_exhaustive()
    }
}

impl RequireLayer {
    /// A guard requiring `permission` (`resource:action`, like `orders:write`), decided by
    /// `observer`. When no role of the policy in force grants it, a warning is logged (every
    /// request would be refused).
    ///
    /// # Panics
    ///
    /// When `permission` does not parse (the message says why): it is written in the code and
    /// checked when the router is built. [`RequireLayer::try_new`] returns the error instead.
    #[track_caller]
    pub fn new(observer: &Observer, permission: &str) -> Self {
        match Self::try_new(observer, permission) {
            Ok(layer) => layer,
            Err(e) => panic!("qiflow RequireLayer: {e}"),
        }
    }

    /// [`RequireLayer::new`], returning the error of a permission that does not parse.
    pub fn try_new(observer: &Observer, permission: &str) -> Result<Self, PermissionError> {
        let permission = Permission::parse(permission)?;
        observer.warn_if_ungrantable(&permission);
        Ok(Self {
            shared: Arc::new(Shared {
                observer: observer.clone(),
                permission,
                route: None,
            }),
        })
    }

    /// How to find the request's route template for the audit record and the denial list
    /// (axum's `MatchedPath`; `qiflow_axum::require` sets it). Without it, the path is used.
    #[must_use]
    pub fn route(
        self,
        route: impl Fn(&http::Extensions) -> Option<Cow<'_, str>> + Send + Sync + 'static,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                observer: self.shared.observer.clone(),
                permission: self.shared.permission.clone(),
                route: Some(Arc::new(route)),
            }),
        }
    }

    /// The permission it requires.
    pub fn permission(&self) -> &Permission {
        &self.shared.permission
    }
}

impl<S> tower::Layer<S> for RequireLayer {
    type Service = Require<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Require {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`RequireLayer`] wraps around the inner one.
#[derive(Clone)]
pub struct Require<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> std::fmt::Debug for Require<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Require")
            .field("permission", &self.shared.permission.as_str())
            .finish_non_exhaustive()
    }
}

impl<S> Require<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for Require<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<String>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = RequireFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let Shared {
            observer,
            permission,
            route,
        } = &*self.shared;
        let mut info = RequestInfo::new(request.method().as_str(), request.uri().path());
        if let Some(route) = route {
            info.route = route(request.extensions());
        }
        let refused = observer
            .guard(request.extensions().get::<Principal>(), permission, &info)
            .err();
        match refused {
            None => RequireFuture::called(self.inner.call(request)),
            Some(refusal) => {
                let mut response = Response::new(ResBody::from(refusal.body));
                *response.status_mut() =
                    StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::FORBIDDEN);
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                RequireFuture::refused(response)
            }
        }
    }
}

pin_project! {
    /// The response future of [`Require`]: the inner service's, or the refusal.
    pub struct RequireFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = Projected]
    enum State<F, B> {
        // Granted: the inner service's future.
        Called {
            #[pin]
            inner: F,
        },
        // Refused: the answer, ready.
        Refused {
            response: Option<Response<B>>,
        },
    }
}

impl<F, B> RequireFuture<F, B> {
    fn called(inner: F) -> Self {
        Self {
            state: State::Called { inner },
        }
    }

    fn refused(response: Response<B>) -> Self {
        Self {
            state: State::Refused {
                response: Some(response),
            },
        }
    }
}

impl<F, B> std::fmt::Debug for RequireFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequireFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for RequireFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            Projected::Called { inner } => inner.poll(cx),
            Projected::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled again after it answered (a breach of the `Future` contract): it stays
                // pending rather than panic on a request path.
                None => Poll::Pending,
            },
        }
    }
}
