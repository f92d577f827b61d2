//! Who is asking: a session cookie, HTTP Basic (over TLS or from loopback only, checked by
//! `crate::login`), or a bearer token.
//!
//! [`csrf_guard`] refuses state-changing requests from other sites: any non-GET request whose
//! `Origin`/`Sec-Fetch-Site` says cross-site, and any one that rides on the session cookie without the
//! session's CSRF token (header `X-CSRF-Token`, or form field `csrf`).

use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, OriginalUri, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use mailroom_store::Mailbox;

use crate::errors::ApiError;
use crate::listener::Peer;
use crate::login::LoginError;
use crate::session::COOKIE;
use crate::state::AppState;

/// Name of the CSRF header and form field.
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const CSRF_FIELD: &str = "csrf";

/// The logged-in user of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub address: String,
    pub admin: bool,
    pub mailbox: Mailbox,
    /// The session's CSRF token (cookie logins; pages put it in their forms).
    pub csrf: String,
    /// The session id, when the request came with the cookie.
    pub session: Option<String>,
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::trim)
}

/// The session id of the request's cookie.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// The path as the client sent it (nested routers see it without their prefix).
fn original_path(parts: &Parts) -> String {
    parts.extensions.get::<OriginalUri>().map_or_else(|| parts.uri.path().to_owned(), |u| u.0.path().to_owned())
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Caller, Response> {
        let is_api = original_path(parts).starts_with("/api/");
        let refuse = |e: ApiError| {
            if is_api {
                let mut r = e.into_response();
                r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
                r
            } else {
                Redirect::to("/login").into_response()
            }
        };
        let peer = parts.extensions.get::<ConnectInfo<Peer>>().map(|c| c.0);
        let (address, session) = identify(parts, state, peer).await.map_err(refuse)?;
        let users = state.store.users();
        let user = users.get(&address).ok_or_else(|| refuse(ApiError::unauthorized("no such user")))?;
        let mailbox = state.store.mailbox(&user.address).map_err(|e| refuse(ApiError::internal(e)))?;
        let csrf = session.as_ref().map(|s| s.1.clone()).unwrap_or_default();
        Ok(Caller { address: user.address.clone(), admin: user.admin, mailbox, csrf, session: session.map(|s| s.0) })
    }
}

type SessionRef = (String, String);

/// The address the request authenticates as, and its session (id, csrf) when it used the cookie.
async fn identify(
    parts: &Parts,
    state: &Arc<AppState>,
    peer: Option<Peer>,
) -> Result<(String, Option<SessionRef>), ApiError> {
    if let Some(token) = bearer(&parts.headers) {
        let (tokens, token) = (state.tokens.clone(), token.to_owned());
        let found = tokio::task::spawn_blocking(move || tokens.check(&token)).await.ok().flatten();
        return found.map(|a| (a, None)).ok_or_else(|| ApiError::unauthorized("unknown or revoked token"));
    }
    if let Some(basic) = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let Some(encoded) = basic.strip_prefix("Basic ") else {
            return Err(ApiError::unauthorized("unsupported authorization scheme"));
        };
        let peer = peer.ok_or_else(|| ApiError::unauthorized("no peer"))?;
        if !peer.is_tls && !peer.is_loopback() {
            return Err(ApiError::unauthorized("HTTP Basic needs TLS (or a loopback client)"));
        }
        let decoded = mailroom_proto::base64::decode(encoded.trim()).and_then(|b| String::from_utf8(b).ok());
        let (user, password) =
            decoded.as_deref().and_then(|d| d.split_once(':')).ok_or_else(|| ApiError::unauthorized("bad Basic"))?;
        let address = state.logins.check(&state.store, peer.addr.ip(), user, password).await.map_err(login_error)?;
        return Ok((address, None));
    }
    let id = session_cookie(&parts.headers).ok_or_else(|| ApiError::unauthorized("log in first"))?;
    let session = state.sessions.get(id).ok_or_else(|| ApiError::unauthorized("session expired"))?;
    Ok((session.address, Some((id.to_owned(), session.csrf))))
}

pub fn login_error(e: LoginError) -> ApiError {
    match e {
        LoginError::Invalid => ApiError::unauthorized("invalid address or password"),
        LoginError::Blocked => ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too_many_failures",
            "too many failed logins from this address; try again later",
        ),
    }
}

/// Refuses cross-site state changes and cookie requests without the CSRF token (see the module doc).
pub async fn csrf_guard(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    let headers = request.headers();
    if is_cross_site(headers) {
        return csrf_refusal("cross-site request refused");
    }
    let uses_cookie = !headers.contains_key(header::AUTHORIZATION);
    let session = session_cookie(headers).and_then(|id| state.sessions.get(id));
    let Some(session) = session.filter(|_| uses_cookie) else {
        // No session: the handler's own authentication decides (login, tokens, Basic).
        return next.run(request).await;
    };
    if let Some(given) = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        return if crate::tokens::same(given.as_bytes(), session.csrf.as_bytes()) {
            next.run(request).await
        } else {
            csrf_refusal("bad CSRF token")
        };
    }
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return csrf_refusal("missing CSRF token");
    }
    let (parts, body) = request.into_parts();
    // The largest body any route takes (compose); each route's own limit applies after this.
    let Ok(bytes) = axum::body::to_bytes(body, crate::state::MAX_COMPOSE_REQUEST).await else {
        return ApiError::new(axum::http::StatusCode::PAYLOAD_TOO_LARGE, "too_large", "request body too large")
            .into_response();
    };
    let token_ok =
        form_field(&bytes, CSRF_FIELD).is_some_and(|t| crate::tokens::same(t.as_bytes(), session.csrf.as_bytes()));
    if !token_ok {
        return csrf_refusal("missing or bad CSRF token");
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

/// `Sec-Fetch-Site` other than `same-origin`/`none`; without that header, an `Origin` whose host is
/// not this request's `Host`.
fn is_cross_site(headers: &HeaderMap) -> bool {
    // Browsers that send Sec-Fetch-Site say it best (`none`: typed by the user, `same-origin`: our page).
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !matches!(site, "same-origin" | "none");
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    origin == "null" || !origin_host.eq_ignore_ascii_case(host)
}

fn csrf_refusal(message: &str) -> Response {
    ApiError::new(axum::http::StatusCode::FORBIDDEN, "csrf", message).into_response()
}

/// One field of an urlencoded form.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}
