//! [`Require`]: a permission guard for a resource, a scope or an app, deciding with
//! [`Observer::authorize`] (the check and its audit record in one call).

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::body::{BoxBody, EitherBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::{Error, HttpMessage, HttpResponse};
use pin_project_lite::pin_project;
use qiflow_core::Observer;
use qiflow_core::authz::{Permission, PermissionError, Principal};

use crate::request::request_info;

/// A permission guard for actix-web: wrap a `Resource`, a `Scope` or an `App` with it, and a
/// request gets through only when its [`Principal`] holds the permission (see
/// [`qiflow_core::authz`]).
///
/// The host's authentication puts the [`Principal`] in the request extensions
/// (`req.extensions_mut().insert(principal)`) before the guard runs; the guard asks
/// [`Observer::authorize`], which records a denial itself (audit record `authz.denied`, a
/// `qiflow::authz` line, the recent denials of `GET /qiflow/api/authz`,
/// `qiflow_authz_decisions_total`). Then:
///
/// - no principal: `401 Unauthorized` with the JSON body
///   `{"error":"unauthenticated","permission":"orders:write","request_id":…}` (counted by
///   [`Observer::authorize_unauthenticated`], not audited);
/// - a principal without the permission: `[authz] deny_status` (`403 Forbidden` by default) with
///   `{"error":"forbidden","permission":"orders:write","request_id":…}`, naming the missing
///   permission, never the principal's roles;
/// - granted: the inner service is called and its response passed on unchanged.
///
/// The handler does not run for a refused request. The check is a few hash lookups; a denial's
/// audit record goes through the audit pipeline, so the request never blocks on it.
///
/// # Order of the wraps
///
/// In actix-web the **last** `.wrap()` is the outermost middleware. Wrap the app with
/// [`Observe`](crate::Observe) last, so that it is outside the guard: a denial then happens
/// inside the request's span, and its audit record and log line carry the request id (and
/// the trace). The authentication that inserts the [`Principal`] must run before the guard,
/// that is outside it too: an app-level middleware runs before a resource's or a scope's.
///
/// ```
/// use actix_web::dev::Service;
/// use actix_web::{App, HttpMessage, HttpResponse, test, web};
/// use qiflow_actix::{Observe, Require};
/// use qiflow_core::authz::Principal;
///
/// # actix_web::rt::System::new().block_on(async {
/// let state = tempfile::tempdir().unwrap();
/// let mut config = qiflow_core::test::quiet_config();
/// config.service.state_dir = state.path().into();
/// config.authz = qiflow_core::config::Loader::new()
///     .toml_str("[authz.roles.clerk]\npermissions = [\"orders:write\"]\n")
///     .load()
///     .unwrap()
///     .authz;
/// let (observer, _guard) = qiflow_core::Observer::builder(config)
///     .install_global(false)
///     .build()
///     .unwrap();
/// let app = test::init_service(
///     App::new()
///         .service(
///             web::resource("/orders")
///                 .route(web::post().to(|| async { HttpResponse::Created().body("created") }))
///                 // checked when the app is built: a permission that does not parse panics
///                 .wrap(Require::new(&observer, "orders:write")),
///         )
///         // the host's authentication hands the user over (a real one verifies a token; a
///         // trusted `x-user` header is for this example only)
///         .wrap_fn(|req, srv| {
///             let user = req
///                 .headers()
///                 .get("x-user")
///                 .and_then(|v| v.to_str().ok())
///                 .map(str::to_owned);
///             if let Some(user) = user {
///                 let role = if user == "ada" { "clerk" } else { "guest" };
///                 req.extensions_mut().insert(Principal::new(user).role(role));
///             }
///             srv.call(req)
///         })
///         // outermost: a denial is recorded inside the request's span, with its id
///         .wrap(Observe::new(observer.clone())),
/// )
/// .await;
///
/// // Nobody signed in: 401.
/// let request = test::TestRequest::post().uri("/orders").to_request();
/// assert_eq!(test::call_service(&app, request).await.status(), 401);
/// // A clerk may write.
/// let request = test::TestRequest::post()
///     .uri("/orders")
///     .insert_header(("x-user", "ada"))
///     .to_request();
/// assert_eq!(test::call_service(&app, request).await.status(), 201);
/// // Anyone else may not, and the body says what was missing.
/// let request = test::TestRequest::post()
///     .uri("/orders")
///     .insert_header(("x-user", "bob"))
///     .to_request();
/// let response = test::call_service(&app, request).await;
/// assert_eq!(response.status(), 403);
/// let body = test::read_body(response).await;
/// assert!(std::str::from_utf8(&body).unwrap().contains(r#""permission":"orders:write""#));
/// assert_eq!(observer.authz_denials()[0].route, "/orders");
/// # });
/// ```
#[derive(Clone)]
pub struct Require {
    shared: Arc<Shared>,
}

/// What a guard and its services share.
struct Shared {
    observer: Observer,
    permission: Permission,
}

impl std::fmt::Debug for Require {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Require")
            .field("permission", &self.shared.permission.as_str())
            .finish_non_exhaustive()
    }
}

impl Require {
    /// A guard requiring `permission` (`resource:action`, like `orders:write`), decided by
    /// `observer`. The permission is parsed here, once, not per request.
    ///
    /// # Panics
    ///
    /// When `permission` does not parse; the message names it and says why. It is written in
    /// the code and this runs when the app is built (like actix-web's own route macros, which
    /// refuse a bad path at startup), so a typo stops the service before it serves anything.
    /// [`Require::try_new`] returns the error instead.
    #[track_caller]
    pub fn new(observer: &Observer, permission: &str) -> Self {
        match Self::try_new(observer, permission) {
            Ok(require) => require,
            Err(e) => {
                panic!("qiflow_actix::Require: the permission {permission:?} does not parse: {e}")
            }
        }
    }

    /// [`Require::new`], returning the error of a permission that does not parse instead of
    /// panicking.
    ///
    /// ```
    /// # let state = tempfile::tempdir().unwrap();
    /// # let mut config = qiflow_core::test::quiet_config();
    /// # config.service.state_dir = state.path().into();
    /// # let (observer, _guard) = qiflow_core::Observer::builder(config)
    /// #     .install_global(false)
    /// #     .build()
    /// #     .unwrap();
    /// assert!(qiflow_actix::Require::try_new(&observer, "orders:write").is_ok());
    /// // a check names one permission: no wildcard
    /// assert!(qiflow_actix::Require::try_new(&observer, "orders:*").is_err());
    /// ```
    pub fn try_new(observer: &Observer, permission: &str) -> Result<Self, PermissionError> {
        let permission = Permission::parse(permission)?;
        observer.warn_if_ungrantable(&permission);
        Ok(Self {
            shared: Arc::new(Shared {
                observer: observer.clone(),
                permission,
            }),
        })
    }

    /// The permission it requires.
    pub fn permission(&self) -> &Permission {
        &self.shared.permission
    }

    /// The observer that decides and records.
    pub fn observer(&self) -> &Observer {
        &self.shared.observer
    }
}

impl<S, B> Transform<S, ServiceRequest> for Require
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = RequireMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequireMiddleware {
            service,
            shared: self.shared.clone(),
        }))
    }
}

/// The service [`Require`] wraps around the inner one.
///
/// Its responses are `ServiceResponse<EitherBody<B>>`: the inner service's body on the left, a
/// refusal's JSON on the right.
pub struct RequireMiddleware<S> {
    service: S,
    shared: Arc<Shared>,
}

impl<S> std::fmt::Debug for RequireMiddleware<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequireMiddleware")
            .field("permission", &self.shared.permission.as_str())
            .finish_non_exhaustive()
    }
}

impl<S> RequireMiddleware<S> {
    /// The permission it requires.
    pub fn permission(&self) -> &Permission {
        &self.shared.permission
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

impl<S, B> Service<ServiceRequest> for RequireMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = RequireFuture<S::Future>;

    forward_ready!(service);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        let Shared {
            observer,
            permission,
        } = &*self.shared;
        // The extensions are borrowed only here: the inner service may need them mutably.
        let refused = {
            let info = request_info(&request);
            let extensions = request.extensions();
            observer
                .guard(extensions.get::<Principal>(), permission, &info)
                .err()
        };
        match refused {
            None => RequireFuture::Called {
                inner: self.service.call(request),
            },
            Some(refusal) => {
                // `[authz] deny_status` is checked to be a 4xx when the configuration loads.
                let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::FORBIDDEN);
                let response = HttpResponse::build(status)
                    .insert_header(ContentType::json())
                    .body(refusal.body);
                RequireFuture::Refused {
                    response: Some(request.into_response(response)),
                }
            }
        }
    }
}

pin_project! {
    /// The response future of [`RequireMiddleware`]: the inner service's, or the refusal.
    #[project = Projected]
    pub enum RequireFuture<F> {
        /// Granted: the inner service's future.
        Called {
            #[pin]
            inner: F,
        },
        /// Refused: the answer, ready.
        Refused {
            response: Option<ServiceResponse<BoxBody>>,
        },
    }
}

impl<F> std::fmt::Debug for RequireFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self {
            Self::Called { .. } => "Called",
            Self::Refused { .. } => "Refused",
        };
        f.debug_tuple("RequireFuture").field(&state).finish()
    }
}

impl<F, B> Future for RequireFuture<F>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
    type Output = Result<ServiceResponse<EitherBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Projected::Called { inner } => {
                inner.poll(cx).map_ok(ServiceResponse::map_into_left_body)
            }
            Projected::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response.map_into_right_body())),
                // Polled again after it answered (a breach of the `Future` contract): it stays
                // pending rather than panic on a request path.
                None => Poll::Pending,
            },
        }
    }
}
