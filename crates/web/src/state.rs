//! The state every handler shares, and the limits on requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use mailroom_queue::Queue;
use mailroom_server::tls::TlsHandle;
use mailroom_server::Config;
use mailroom_store::Store;

use crate::login::LoginLimiter;
use crate::session::Sessions;
use crate::tokens::TokenFile;
use crate::{MetricsRender, WebContext};

/// Largest request body taken (forms, JSON): nothing the API accepts is bigger than a user entry or a
/// move request.
pub const MAX_REQUEST_BODY: usize = 64 * 1024;

/// Largest compose request (JSON or form): text only, no attachments. Larger than the other routes'
/// [`MAX_REQUEST_BODY`]; the message itself is bounded by `[limits] max_message_size`.
pub const MAX_COMPOSE_REQUEST: usize = 1024 * 1024;

/// Live views (server-sent event streams) open at once, over all users: each costs two stats per poll.
pub const MAX_EVENT_STREAMS: usize = 256;

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
    pub submitter: Option<mailroom_server::submit::Submitter>,
    pub pages: crate::page::Pages,
    /// Permits for live views (at most [`MAX_EVENT_STREAMS`]).
    pub event_streams: Arc<tokio::sync::Semaphore>,
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
            submitter: ctx.submitter,
            pages: crate::page::Pages::new(),
            event_streams: Arc::new(tokio::sync::Semaphore::new(MAX_EVENT_STREAMS)),
        }
    }
}
