//! The admin part of the JSON API: the queue (list, retry now, delete, bounce — filed as requests that
//! the server's queue loop carries out, exactly as `mailroom queue` does), the users (list, add,
//! remove, admin flag) and the server status. Admins see no one else's mail: these routes never touch
//! a mailbox.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use mailroom_queue::{Envelope, Request, State as RcptState};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{blocking, body};
use crate::auth::Caller;
use crate::errors::{ApiError, ApiResult};
use crate::state::AppState;

/// Shortest password `users` accepts from the API.
pub const MIN_PASSWORD: usize = 8;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/queue", get(queue_list))
        .route("/queue/{id}/{action}", post(queue_action))
        .route("/users", get(users).post(add_user))
        .route("/users/{address}", axum::routing::delete(remove_user))
        .route("/users/{address}/admin", put(set_admin))
        .route("/users/{address}/quota", put(set_quota))
        .route("/status", get(status))
}

/// 403 unless the caller is an admin.
pub fn require_admin(caller: &Caller) -> ApiResult<()> {
    if caller.admin {
        Ok(())
    } else {
        Err(ApiError::forbidden("admins only"))
    }
}

/// One queue entry as the API shows it.
pub fn entry_json(env: &Envelope) -> Value {
    let rcpts: Vec<Value> = env
        .rcpts
        .iter()
        .map(|r| {
            json!({
                "address": r.address,
                "state": r.state.as_str(),
                "attempts": r.attempts,
                "next_attempt": matches!(r.state, RcptState::Pending | RcptState::Deferred).then_some(r.next_attempt),
                "last_reply": r.last_reply,
            })
        })
        .collect();
    json!({ "id": env.id, "from": env.from, "arrival": env.arrival, "size": env.size, "recipients": rcpts })
}

async fn queue_list(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<Value>> {
    require_admin(&caller)?;
    let entries = state.queue.list().map_err(ApiError::internal)?;
    Ok(Json(json!({ "entries": entries.iter().map(entry_json).collect::<Vec<_>>() })))
}

/// Files `action` (`retry`, `delete`, `bounce`) for queue entry `id`.
pub fn queue_request(state: &AppState, id: &str, action: &str) -> ApiResult<()> {
    let what = match action {
        "retry" => Request::Flush,
        "delete" => Request::Delete,
        "bounce" => Request::Bounce,
        _ => return Err(ApiError::not_found("no such queue action (retry, delete, bounce)")),
    };
    state.queue.get(id).map_err(|_| ApiError::not_found("no such queue entry"))?;
    state.queue.request(id, what).map_err(ApiError::internal)
}

async fn queue_action(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    require_admin(&caller)?;
    blocking(move || queue_request(&state, &id, &action)).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "requested": true }))))
}

async fn users(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<Value>> {
    require_admin(&caller)?;
    let list: Vec<Value> = state
        .store
        .users()
        .iter()
        .map(|u| {
            let quota = json!({ "bytes": u.quota.bytes, "messages": u.quota.messages });
            json!({ "address": u.address, "admin": u.admin, "has_password": u.password_hash.is_some(), "quota": quota })
        })
        .collect();
    Ok(Json(json!({ "users": list })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub address: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub admin: bool,
}

/// Adds a user (hashing the password off the async threads); the store's reload picks it up.
pub fn add(state: &AppState, new: &NewUser) -> ApiResult<String> {
    if new.password.as_ref().is_some_and(|p| p.chars().count() < MIN_PASSWORD) {
        return Err(ApiError::bad_request(format!("password: at least {MIN_PASSWORD} characters")));
    }
    let hash = match &new.password {
        Some(p) => Some(mailroom_store::password::hash_password(p).map_err(ApiError::internal)?),
        None => None,
    };
    let dir = state.store.directory();
    let user = dir.add(&new.address, hash).map_err(user_error)?;
    if new.admin {
        dir.set_admin(&user.address, true).map_err(user_error)?;
    }
    Ok(user.address)
}

fn user_error(e: mailroom_store::UserError) -> ApiError {
    use mailroom_store::UserError as E;
    match e {
        E::Exists(_) => ApiError::conflict("that user exists"),
        E::NotFound(_) => ApiError::not_found("no such user"),
        E::InvalidAddress { reason, .. } => ApiError::bad_request(format!("address: {reason}")),
        E::InvalidDomain { reason, .. } => ApiError::bad_request(format!("address: {reason}")),
        other => ApiError::internal(other),
    }
}

async fn add_user(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    json: Result<Json<NewUser>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    require_admin(&caller)?;
    let new = body(json)?;
    let admin = new.admin;
    let address = blocking(move || add(&state, &new)).await?;
    Ok((StatusCode::CREATED, Json(json!({ "address": address, "admin": admin }))))
}

/// Removes a user (mailbox kept on disk) and ends their sessions.
pub fn remove(state: &AppState, address: &str) -> ApiResult<()> {
    state.store.directory().remove(address).map_err(user_error)?;
    state.sessions.close_user(&address.to_lowercase());
    Ok(())
}

async fn remove_user(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(address): Path<String>,
) -> ApiResult<StatusCode> {
    require_admin(&caller)?;
    blocking(move || remove(&state, &address)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminFlag {
    admin: bool,
}

async fn set_admin(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(address): Path<String>,
    json: Result<Json<AdminFlag>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    require_admin(&caller)?;
    let flag = body(json)?;
    let addr = address.clone();
    blocking(move || state.store.directory().set_admin(&addr, flag.admin).map_err(user_error)).await?;
    Ok(Json(json!({ "address": address, "admin": flag.admin })))
}

/// A mailbox's limits; 0 is no limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaBody {
    pub bytes: u64,
    #[serde(default)]
    pub messages: u64,
}

/// Sets a user's quota (as `mailroom user quota`).
pub fn quota(state: &AppState, address: &str, q: &QuotaBody) -> ApiResult<()> {
    let quota = mailroom_store::quota::Quota { bytes: q.bytes, messages: q.messages };
    state.store.directory().set_quota(address, quota).map_err(user_error)
}

async fn set_quota(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(address): Path<String>,
    json: Result<Json<QuotaBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    require_admin(&caller)?;
    let q = body(json)?;
    let (bytes, messages, addr) = (q.bytes, q.messages, address.clone());
    blocking(move || quota(&state, &addr, &q)).await?;
    Ok(Json(json!({ "address": address, "bytes": bytes, "messages": messages })))
}

/// The status page's facts: version, uptime, listeners, users, queue by state.
pub fn status_json(state: &AppState) -> Value {
    let uptime = SystemTime::now().duration_since(state.started).map_or(0, |d| d.as_secs());
    let mut by_state = std::collections::BTreeMap::<&str, usize>::new();
    let entries = state.queue.list().unwrap_or_default();
    for r in entries.iter().flat_map(|e| &e.rcpts) {
        *by_state.entry(r.state.as_str()).or_default() += 1;
    }
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": uptime,
        "hostname": state.config.server.hostname,
        "smtp_listeners": state.smtp_listeners.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "http_listener": state.http_addr.to_string(),
        "users": state.store.users().len(),
        "queue_entries": entries.len(),
        "queue_recipients": by_state,
    })
}

async fn status(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<Value>> {
    require_admin(&caller)?;
    Ok(Json(blocking(move || Ok(status_json(&state))).await?))
}
