//! The user's pages: login and logout, a folder (paged, searchable, updated live through server-sent
//! events), one message, and the forms that mark, move and delete. Every action goes through the same
//! functions as the API (`crate::api`), so both see and change exactly the same things.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{ConnectInfo, Form, Path, RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use minijinja::context;
use serde::Deserialize;

use crate::api::{self, blocking};
use crate::auth::Caller;
use crate::errors::ApiError;
use crate::listener::Peer;
use crate::mail::{self, INBOX};
use crate::session::{COOKIE, SESSION_LIFETIME};
use crate::state::AppState;

/// How often the live view looks at the folder for changes (a stat of two directories).
pub const EVENTS_POLL: Duration = Duration::from_secs(2);

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/folders/INBOX") }))
        .route("/assets/{name}", get(crate::page::asset))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/folders/{folder}", get(folder_page))
        .route("/folders/{folder}/messages/{id}", get(message_page))
        .route("/folders/{folder}/messages/{id}/seen", post(mark))
        .route("/folders/{folder}/messages/{id}/delete", post(delete))
        .route("/folders/{folder}/messages/{id}/move", post(move_message))
        .route("/events", get(events))
}

/// A page for an API error (the UI's 404s and 500s).
pub fn error_page(state: &AppState, caller: Option<&Caller>, e: ApiError) -> Response {
    let mut r = state
        .pages
        .render("error.html", context! { me => caller.map(me), status => e.status.as_u16(), message => e.message });
    *r.status_mut() = e.status;
    r
}

/// What every page's header needs about the user.
pub fn me(caller: &Caller) -> minijinja::Value {
    context! { address => caller.address, admin => caller.admin, csrf => caller.csrf }
}

async fn login_page(State(state): State<Arc<AppState>>) -> Response {
    state.pages.render("login.html", context! {})
}

#[derive(Deserialize)]
struct LoginForm {
    address: String,
    password: String,
}

async fn login(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Form(form): Form<LoginForm>,
) -> Response {
    let checked = state.logins.check(&state.store, peer.addr.ip(), &form.address, &form.password).await;
    let address = match checked {
        Ok(a) => a,
        Err(e) => {
            let e = crate::auth::login_error(e);
            let mut r = state.pages.render("login.html", context! { error => e.message, address => form.address });
            *r.status_mut() = e.status;
            return r;
        }
    };
    let Ok((id, _)) = state.sessions.open(&address) else {
        return ApiError::internal("no random numbers for a session id").into_response();
    };
    tracing::info!(user = %address, client = %peer.addr.ip(), "web login");
    let secure = if state.config.http.tls { "; Secure" } else { "" };
    let cookie =
        format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}", SESSION_LIFETIME.as_secs());
    let mut r = Redirect::to("/folders/INBOX").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn logout(State(state): State<Arc<AppState>>, caller: Caller) -> Response {
    if let Some(id) = &caller.session {
        state.sessions.close(id);
    }
    let mut r = Redirect::to("/login").into_response();
    let expired = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&expired) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn folder_page(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let query = api::query_map(q);
    // After compose: the store's id of the message sent, shown as a note.
    let sent = query.get("sent").filter(|id| mail::is_id(id)).cloned();
    let (page, per_page, search) = match api::page_query(&query) {
        Ok(p) => p,
        Err(e) => return error_page(&state, Some(&caller), e),
    };
    let c = caller.clone();
    let listed = blocking(move || {
        let page = api::list_page(&c, &name, page, per_page, &search)?;
        Ok((page, mail::folders(&c.mailbox), search))
    })
    .await;
    let (page, folders, search) = match listed {
        Ok(v) => v,
        Err(e) => return error_page(&state, Some(&caller), e),
    };
    let pages = page.total.div_ceil(page.per_page).max(1);
    state.pages.render(
        "folder.html",
        context! {
            me => me(&caller), folders => folders, page => page, pages => pages,
            search => context! { from => search.from, to => search.to, subject => search.subject, text => search.text },
            is_search => !search.is_empty(), sent => sent,
        },
    )
}

async fn message_page(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    let images = api::query_map(q).get("images").is_some_and(|v| v == "1");
    let c = caller.clone();
    let viewed = blocking(move || {
        let (folder, entry) = api::message(&c, &name, &id)?;
        let raw = api::read_message(&entry)?;
        let view = crate::message::view(&raw, &entry.id, &folder.name, entry.is_seen(), images);
        Ok((view, mail::folders(&c.mailbox)))
    })
    .await;
    let (view, folders) = match viewed {
        Ok(v) => v,
        Err(e) => return error_page(&state, Some(&caller), e),
    };
    let mut r = state
        .pages
        .render("message.html", context! { me => me(&caller), m => view, folders => folders, images => images });
    if images {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(crate::page::CSP_IMAGES));
    }
    r
}

/// Back to the folder.
fn back(folder: &str) -> Redirect {
    Redirect::to(&format!("/folders/{}", urlencode(folder)))
}

/// Percent-encodes a path segment.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(Deserialize)]
struct SeenForm {
    seen: String,
}

async fn mark(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    Form(form): Form<SeenForm>,
) -> Response {
    let (c, n, i) = (caller.clone(), name.clone(), id.clone());
    match blocking(move || api::set_seen(&c, &n, &i, form.seen == "1")).await {
        Ok(_) => Redirect::to(&format!("/folders/{}/messages/{}", urlencode(&name), urlencode(&id))).into_response(),
        Err(e) => error_page(&state, Some(&caller), e),
    }
}

async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    let (c, n) = (caller.clone(), name.clone());
    match blocking(move || api::delete_message(&c, &n, &id)).await {
        Ok(()) => back(&name).into_response(),
        Err(e) => error_page(&state, Some(&caller), e),
    }
}

#[derive(Deserialize)]
struct MoveForm {
    to: String,
}

async fn move_message(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    Form(form): Form<MoveForm>,
) -> Response {
    let (c, n) = (caller.clone(), name.clone());
    match blocking(move || api::move_to(&c, &n, &id, &form.to)).await {
        Ok(_) => back(&name).into_response(),
        Err(e) => error_page(&state, Some(&caller), e),
    }
}

/// What changes when mail arrives, is marked, moved or deleted: the modification times of the folder's
/// `new/` and `cur/` directories (an entry added, removed or renamed changes them). Two stats, however
/// big the folder.
fn folder_stamp(caller: &Caller, name: &str) -> Option<Vec<Option<SystemTime>>> {
    let folder = mail::open_folder(&caller.mailbox, name)?;
    Some(folder.subdirs().iter().map(|d| std::fs::metadata(d).and_then(|m| m.modified()).ok()).collect())
}

/// `/events?folder=NAME`: an event `change` whenever the folder changes, polled every [`EVENTS_POLL`];
/// at most `state::MAX_EVENT_STREAMS` streams at once (503 beyond).
async fn events(State(state): State<Arc<AppState>>, caller: Caller, RawQuery(q): RawQuery) -> Response {
    let Ok(permit) = state.event_streams.clone().try_acquire_owned() else {
        return ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy", "too many live views")
            .into_response();
    };
    let name = api::query_map(q).get("folder").cloned().unwrap_or_else(|| INBOX.to_owned());
    let start = (caller, name, None::<Option<Vec<Option<SystemTime>>>>, permit);
    let stream = futures_util::stream::unfold(start, |(caller, name, last, permit)| async move {
        loop {
            let (c, n) = (caller.clone(), name.clone());
            let stamp = tokio::task::spawn_blocking(move || folder_stamp(&c, &n)).await.ok().flatten();
            let changed = last.as_ref().is_some_and(|l| *l != stamp);
            if last.is_none() || changed {
                // Browsers drop events with no data (HTML, server-sent events: "data buffer is empty").
                let event = Event::default().event(if changed { "change" } else { "ready" }).data(name.as_str());
                return Some((Ok::<_, Infallible>(event), (caller, name, Some(stamp), permit)));
            }
            tokio::time::sleep(EVENTS_POLL).await;
        }
    });
    let mut r = Sse::new(stream).keep_alive(KeepAlive::default()).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
