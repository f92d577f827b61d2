//! mailroom-web: the HTTP side of `mailroom serve`, in the same process and runtime as the SMTP
//! listeners.
//!
//! - this module: [`WebContext`] (what the server hands over), binding the listener ([`bind`]: a busy
//!   *default* address is a warning, an explicit one fatal) and running it ([`Web::run`]);
//! - `listener`: plain and TLS listeners, and the peer info (address, TLS) every handler can see;
//! - `state`: the shared state of the handlers;
//! - `auth`: who is asking (session cookie, HTTP Basic, bearer token) and the CSRF guard; `login`:
//!   password checks off the async threads with SMTP AUTH's failure delay; `session`: the session table;
//! - `health`: `/healthz`, `/readyz`, `/metrics`;
//! - [`tokens`]: API tokens (`mailroom token create`), stored hashed in the data directory;
//! - `listing`: the listing cache (each folder's sorted listing while its `new/` and `cur/` are unchanged);
//! - `compose`: compose and send (`POST /api/v1/messages/send` and the compose page), through the
//!   server's in-process submission (`mailroom_server::submit`);
//! - `mail`: a user's Maildir as the API sees it (folders, listing, flags, move, delete) — every id is
//!   matched against the user's own directory listing, no path is built from request input;
//! - `message`: one message parsed for display (headers, text, sanitised HTML, attachments);
//! - `api`, `api_admin`: the JSON API under `/api/v1` (its OpenAPI document is `openapi.json` beside
//!   them); `ui`, `ui_admin`, `ui_compose`: the server-rendered pages; `page`: templates, assets and security headers;
//! - `errors`: the JSON error body with its stable codes.
#![forbid(unsafe_code)]

mod api;
mod api_admin;
mod auth;
mod compose;
mod errors;
mod health;
mod listener;
mod listing;
mod login;
mod mail;
mod message;
mod page;
mod session;
mod state;
pub mod tokens;
mod ui;
mod ui_admin;
mod ui_compose;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use mailroom_queue::Queue;
use mailroom_server::tls::TlsHandle;
use mailroom_server::Config;
use mailroom_store::Store;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Renders the Prometheus text exposition served at `/metrics`.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// What the web side needs from the server it runs beside.
pub struct WebContext {
    pub config: Config,
    pub store: Store,
    pub queue: Queue,
    /// The server's certificate, for `[http] tls = true` (reloads on SIGHUP apply here too).
    pub tls: Arc<TlsHandle>,
    /// The SMTP listeners' addresses, for the status page.
    pub smtp_listeners: Vec<SocketAddr>,
    /// `/metrics`; None: 404 there.
    pub metrics: Option<MetricsRender>,
    /// Compose and send ([`mailroom_server::Server::submitter`]); None: sending answers 503.
    pub submitter: Option<mailroom_server::submit::Submitter>,
}

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("cannot listen for HTTP on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// A bound HTTP listener with its routes, ready to run.
pub struct Web {
    listener: TcpListener,
    state: Arc<state::AppState>,
}

/// Binds `[http] listen`. `Ok(None)`: HTTP is off (`enabled = false`), or the default address is
/// taken (another mailroom on this machine) — logged, and the server goes on without HTTP. An address
/// given explicitly that cannot be bound is an error: the admin asked for it.
pub async fn bind(ctx: WebContext) -> Result<Option<Web>, WebError> {
    if !ctx.config.http.enabled {
        return Ok(None);
    }
    let (addr, explicit) = ctx.config.http.address();
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::AddrInUse => {
            warn!(%addr, "the default HTTP address is in use: no web interface (set [http] listen or --http)");
            return Ok(None);
        }
        Err(e) => return Err(WebError::Bind(addr, e)),
    };
    let local = listener.local_addr().map_err(|e| WebError::Bind(addr, e))?;
    let state = Arc::new(state::AppState::new(ctx, local));
    Ok(Some(Web { listener, state }))
}

impl Web {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.state.http_addr
    }

    /// Serves until `shutdown` resolves, then lets requests under way finish.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let scheme = if self.state.config.http.tls { "https" } else { "http" };
        info!(addr = %self.state.http_addr, scheme, "web interface and API listening");
        let router = routes(self.state.clone());
        let result = if self.state.config.http.tls {
            let l = listener::TlsListener::new(self.listener, self.state.tls.clone());
            let svc = router.into_make_service_with_connect_info::<listener::Peer>();
            axum::serve(l, svc).with_graceful_shutdown(shutdown).await
        } else {
            let l = listener::PlainListener(self.listener);
            let svc = router.into_make_service_with_connect_info::<listener::Peer>();
            axum::serve(l, svc).with_graceful_shutdown(shutdown).await
        };
        if let Err(e) = result {
            warn!(error = %e, "the HTTP listener stopped");
        }
    }
}

/// Every route: pages, the API, health and metrics, under the security-header and CSRF layers.
fn routes(state: Arc<state::AppState>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(ui::routes())
        .merge(ui_admin::routes())
        .merge(ui_compose::routes())
        .nest("/api/v1", api::routes().merge(api_admin::routes()).merge(compose::routes()))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::csrf_guard))
        .layer(axum::middleware::from_fn(page::security_headers))
        .layer(axum::extract::DefaultBodyLimit::max(state::MAX_REQUEST_BODY))
        .with_state(state)
}
