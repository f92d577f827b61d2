//! The JSON API of a user's own mailbox under `/api/v1`: folders, listing and search, one message, its
//! raw source and attachments, the Seen flag, move, delete, and the user's API tokens. Described by
//! `openapi.json` beside this file (served at `/api/v1/openapi.json`); a change here changes it too.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::errors::{ApiError, ApiResult};
use crate::mail::{self, Entry, Folder, Search, Summary};
use crate::state::AppState;

/// The OpenAPI 3.0 document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .route("/me", get(me))
        .route("/folders", get(folders))
        .route("/folders/{folder}/messages", get(list))
        .route("/folders/{folder}/messages/{id}", get(show).delete(remove))
        .route("/folders/{folder}/messages/{id}/raw", get(raw))
        .route("/folders/{folder}/messages/{id}/attachments/{index}", get(attachment))
        .route("/folders/{folder}/messages/{id}/flags", put(flags))
        .route("/folders/{folder}/messages/{id}/move", post(move_message))
        .route("/tokens", get(tokens).post(create_token))
        .route("/tokens/{id}", delete(revoke_token))
        .fallback(|| async { ApiError::not_found("no such API route") })
}

/// Runs blocking file work off the async threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> ApiResult<T> + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)?
}

/// A JSON body, or the API's own 400 (axum's rejections are plain text).
pub fn body<T: DeserializeOwned>(json: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    json.map(|Json(v)| v).map_err(|e| ApiError::bad_request(format!("bad JSON body: {}", e.body_text())))
}

async fn me(caller: Caller) -> Json<Value> {
    Json(json!({ "address": caller.address, "admin": caller.admin }))
}

async fn folders(caller: Caller) -> ApiResult<Json<Value>> {
    blocking(move || {
        let mut out = Vec::new();
        for name in mail::folders(&caller.mailbox) {
            let Some(folder) = mail::open_folder(&caller.mailbox, &name) else { continue };
            let entries = folder.entries().map_err(ApiError::internal)?;
            let unread = entries.iter().filter(|e| !e.is_seen()).count();
            out.push(json!({ "name": name, "total": entries.len(), "unread": unread }));
        }
        Ok(Json(json!({ "folders": out })))
    })
    .await
}

/// The caller's folder `name`, or 404.
pub fn folder(caller: &Caller, name: &str) -> ApiResult<Folder> {
    mail::open_folder(&caller.mailbox, name).ok_or_else(|| ApiError::not_found("no such folder"))
}

/// The message `id` in the caller's folder, or 404.
pub fn message(caller: &Caller, folder_name: &str, id: &str) -> ApiResult<(Folder, Entry)> {
    let folder = folder(caller, folder_name)?;
    let entry = folder.find(id).map_err(ApiError::internal)?.ok_or_else(|| ApiError::not_found("no such message"))?;
    Ok((folder, entry))
}

/// The query string as a map; a malformed one reads as empty (axum's own rejection is plain text,
/// and a bad query is better answered by the checks on each value).
pub fn query_map(q: Option<String>) -> HashMap<String, String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(q.as_deref().unwrap_or(""))
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// A page of a listing or search.
#[derive(Debug, serde::Serialize)]
pub struct Page {
    pub folder: String,
    pub page: usize,
    pub per_page: usize,
    /// Messages in the folder (listing) or matches found (search).
    pub total: usize,
    /// A search stopped after [`mail::MAX_SEARCH_SCAN`] messages.
    pub truncated: bool,
    pub messages: Vec<Summary>,
}

/// `page`, `per_page` and the search fields of a query string, checked.
pub fn page_query(q: &HashMap<String, String>) -> ApiResult<(usize, usize, Search)> {
    let number = |key: &str, default: usize, max: usize| -> ApiResult<usize> {
        match q.get(key) {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(format!("{key}: a number from 1 to {max}"))),
            },
        }
    };
    let page = number("page", 1, 1_000_000)?;
    let per_page = number("per_page", mail::DEFAULT_PAGE_SIZE, mail::MAX_PAGE_SIZE)?;
    let field = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    let search = Search { from: field("from"), to: field("to"), subject: field("subject"), text: field("text") };
    Ok((page, per_page, search))
}

/// Lists (or searches) one folder, newest first; only the page's messages have their headers read,
/// unless searching, which reads at most [`mail::MAX_SEARCH_SCAN`] messages.
pub fn list_page(caller: &Caller, name: &str, page: usize, per_page: usize, search: &Search) -> ApiResult<Page> {
    let folder = folder(caller, name)?;
    let entries = folder.entries().map_err(ApiError::internal)?;
    let skip = (page - 1).saturating_mul(per_page);
    let (messages, total, truncated) = if search.is_empty() {
        let shown = entries.iter().skip(skip).take(per_page).map(|e| mail::summary(&folder, e)).collect();
        (shown, entries.len(), false)
    } else {
        let truncated = entries.len() > mail::MAX_SEARCH_SCAN;
        let mut matches = Vec::new();
        for e in entries.iter().take(mail::MAX_SEARCH_SCAN) {
            let s = mail::summary(&folder, e);
            if search.matches(&s, e) {
                matches.push(s);
            }
        }
        let total = matches.len();
        (matches.into_iter().skip(skip).take(per_page).collect(), total, truncated)
    };
    Ok(Page { folder: folder.name, page, per_page, total, truncated, messages })
}

async fn list(caller: Caller, Path(name): Path<String>, RawQuery(q): RawQuery) -> ApiResult<Json<Page>> {
    let (page, per_page, search) = page_query(&query_map(q))?;
    blocking(move || list_page(&caller, &name, page, per_page, &search).map(Json)).await
}

/// The message's bytes, bounded by [`crate::message::MAX_VIEW_SIZE`].
pub fn read_message(entry: &Entry) -> ApiResult<Vec<u8>> {
    if entry.size > crate::message::MAX_VIEW_SIZE {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "message too large to show"));
    }
    std::fs::read(entry.path()).map_err(ApiError::internal)
}

async fn show(
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<crate::message::View>> {
    let images = query_map(q).get("images").is_some_and(|v| v == "1" || v == "true");
    blocking(move || {
        let (folder, entry) = message(&caller, &name, &id)?;
        let raw = read_message(&entry)?;
        Ok(Json(crate::message::view(&raw, &entry.id, &folder.name, entry.is_seen(), images)))
    })
    .await
}

async fn raw(caller: Caller, Path((name, id)): Path<(String, String)>) -> ApiResult<Response> {
    let bytes = blocking(move || read_message(&message(&caller, &name, &id)?.1)).await?;
    let headers = [
        (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        (header::CONTENT_SECURITY_POLICY, crate::page::CSP_INERT),
    ];
    Ok((headers, bytes).into_response())
}

async fn attachment(caller: Caller, Path((name, id, index)): Path<(String, String, String)>) -> ApiResult<Response> {
    let index: usize = index.parse().map_err(|_| ApiError::bad_request("index: a number"))?;
    let (data, filename) = blocking(move || {
        let raw = read_message(&message(&caller, &name, &id)?.1)?;
        crate::message::attachment(&raw, index).ok_or_else(|| ApiError::not_found("no such attachment"))
    })
    .await?;
    let disposition = crate::message::content_disposition(&filename);
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (header::CONTENT_DISPOSITION, disposition),
        (header::CONTENT_SECURITY_POLICY, crate::page::CSP_INERT.to_owned()),
    ];
    Ok((headers, data).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Flags {
    seen: bool,
}

/// Sets the Seen flag of a message (see [`mail::Folder::set_seen`]); returns its new summary.
pub fn set_seen(caller: &Caller, name: &str, id: &str, seen: bool) -> ApiResult<Summary> {
    let (folder, entry) = message(caller, name, id)?;
    folder.set_seen(&entry, seen).map_err(ApiError::internal)?;
    let moved = folder.find(id).map_err(ApiError::internal)?.ok_or_else(|| ApiError::not_found("message gone"))?;
    Ok(mail::summary(&folder, &moved))
}

async fn flags(
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    json: Result<Json<Flags>, JsonRejection>,
) -> ApiResult<Json<Summary>> {
    let flags = body(json)?;
    blocking(move || set_seen(&caller, &name, &id, flags.seen).map(Json)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveTo {
    folder: String,
}

/// Moves a message into another of the caller's folders; returns its summary there.
pub fn move_to(caller: &Caller, name: &str, id: &str, dest_name: &str) -> ApiResult<Summary> {
    let (folder, entry) = message(caller, name, id)?;
    let dest = mail::open_folder(&caller.mailbox, dest_name).ok_or_else(|| ApiError::not_found("no such folder"))?;
    if dest.name == folder.name {
        return Ok(mail::summary(&folder, &entry));
    }
    folder.move_to(&entry, &dest).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => ApiError::conflict("the folder has a message with that name"),
        _ => ApiError::internal(e),
    })?;
    let moved = dest.find(id).map_err(ApiError::internal)?.ok_or_else(|| ApiError::not_found("message gone"))?;
    Ok(mail::summary(&dest, &moved))
}

async fn move_message(
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    json: Result<Json<MoveTo>, JsonRejection>,
) -> ApiResult<Json<Summary>> {
    let to = body(json)?;
    blocking(move || move_to(&caller, &name, &id, &to.folder).map(Json)).await
}

/// Deletes a message of the caller's.
pub fn delete_message(caller: &Caller, name: &str, id: &str) -> ApiResult<()> {
    let (folder, entry) = message(caller, name, id)?;
    folder.delete(&entry).map_err(ApiError::internal)
}

async fn remove(caller: Caller, Path((name, id)): Path<(String, String)>) -> ApiResult<StatusCode> {
    blocking(move || delete_message(&caller, &name, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn tokens(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<Value>> {
    let list = blocking(move || state.tokens.list().map_err(ApiError::internal)).await?;
    let mine: Vec<Value> = list
        .into_iter()
        .filter(|t| t.address == caller.address)
        .map(|t| json!({ "id": t.id, "created": t.created }))
        .collect();
    Ok(Json(json!({ "tokens": mine })))
}

async fn create_token(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<(StatusCode, Json<Value>)> {
    let (entry, token) = blocking(move || state.tokens.create(&caller.address).map_err(ApiError::internal)).await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": entry.id, "created": entry.created, "token": token }))))
}

async fn revoke_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    blocking(move || {
        let owned =
            state.tokens.list().map_err(ApiError::internal)?.iter().any(|t| t.id == id && t.address == caller.address);
        if !owned || !state.tokens.revoke(&id).map_err(ApiError::internal)? {
            return Err(ApiError::not_found("no such token"));
        }
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
