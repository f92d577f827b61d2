//! The state every handler shares, the limits on requests, and the unauthenticated endpoints
//! (`/readyz`, `/metrics`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mailroom_queue::Queue;
use mailroom_server::tls::TlsHandle;
use mailroom_server::Config;
use mailroom_store::Store;

use crate::auth::LoginLimiter;
use crate::listener::Peer;
use crate::session::Sessions;
use crate::tokens::TokenFile;
use crate::{MetricsRender, WebContext};

/// Largest request body taken (forms, JSON): nothing the API accepts is bigger than a user entry or a
/// move request.
pub const MAX_REQUEST_BODY: usize = 64 * 1024;

pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub queue: Queue,
    pub tls: Arc<TlsHandle>,
    pub smtp_listeners: Vec<SocketAddr>,
    pub http_addr: SocketAddr,
    pub started: SystemTime,
    pub sessions: Sessions,
    pub logins: LoginLimiter,
    pub tokens: TokenFile,
    pub metrics: Option<MetricsRender>,
    pub pages: crate::page::Pages,
}

impl AppState {
    pub fn new(ctx: WebContext, http_addr: SocketAddr) -> AppState {
        let logins = LoginLimiter::new(ctx.config.auth.failure_delay, ctx.config.limits.max_auth_failures);
        AppState {
            tokens: TokenFile::new(ctx.store.data_dir()),
            config: ctx.config,
            store: ctx.store,
            queue: ctx.queue,
            tls: ctx.tls,
            smtp_listeners: ctx.smtp_listeners,
            http_addr,
            started: SystemTime::now(),
            sessions: Sessions::default(),
            logins,
            metrics: ctx.metrics,
            pages: crate::page::Pages::new(),
        }
    }
}

/// Ready when the user directory is readable (without it nobody can log in and RCPT gets 451).
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.store.users().is_available() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "user directory unavailable\n").into_response()
    }
}

/// Prometheus text format: open to loopback clients; from elsewhere only with `[http] metrics_token`
/// as a bearer token (and not at all without one).
pub async fn metrics(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
) -> Response {
    let Some(render) = state.metrics.clone() else {
        return (StatusCode::NOT_FOUND, "no metrics in this build\n").into_response();
    };
    if !peer.is_loopback() {
        let expected = state.config.http.metrics_token.as_deref();
        let given = crate::auth::bearer(&headers);
        let allowed =
            matches!((expected, given), (Some(e), Some(g)) if crate::tokens::same(e.as_bytes(), g.as_bytes()));
        if !allowed {
            return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "metrics need a token\n")
                .into_response();
        }
    }
    let body = render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}
