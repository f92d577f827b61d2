//! The admin pages: queue (with retry now, delete, bounce), users (add, remove, admin flag) and
//! status. They call the same functions as the admin API (`crate::api_admin`).

use std::sync::Arc;

use axum::extract::{Form, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use minijinja::context;
use serde::Deserialize;

use crate::api::blocking;
use crate::api_admin::{self, require_admin, NewUser};
use crate::auth::Caller;
use crate::state::AppState;
use crate::ui::{error_page, me};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/queue", get(queue_page))
        .route("/admin/queue/{id}/{action}", post(queue_action))
        .route("/admin/users", get(users_page).post(add_user))
        .route("/admin/users/{address}/remove", post(remove_user))
        .route("/admin/users/{address}/admin", post(set_admin))
        .route("/admin/users/{address}/quota", post(set_quota))
        .route("/admin/status", get(status_page))
}

async fn queue_page(State(state): State<Arc<AppState>>, caller: Caller) -> Response {
    if let Err(e) = require_admin(&caller) {
        return error_page(&state, Some(&caller), e);
    }
    let entries = state.queue.list().unwrap_or_default();
    let entries: Vec<_> = entries.iter().map(api_admin::entry_json).collect();
    state.pages.render("queue.html", context! { me => me(&caller), entries => entries })
}

async fn queue_action(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    if let Err(e) = require_admin(&caller) {
        return error_page(&state, Some(&caller), e);
    }
    let s = state.clone();
    match blocking(move || api_admin::queue_request(&s, &id, &action)).await {
        Ok(()) => Redirect::to("/admin/queue?requested=1").into_response(),
        Err(e) => error_page(&state, Some(&caller), e),
    }
}

async fn users_page(State(state): State<Arc<AppState>>, caller: Caller) -> Response {
    if let Err(e) = require_admin(&caller) {
        return error_page(&state, Some(&caller), e);
    }
    let users: Vec<_> = state
        .store
        .users()
        .iter()
        .map(|u| {
            context! {
                address => u.address, admin => u.admin, has_password => u.password_hash.is_some(),
                quota_bytes => u.quota.bytes, quota_messages => u.quota.messages,
            }
        })
        .collect();
    state.pages.render("users.html", context! { me => me(&caller), users => users })
}

#[derive(Deserialize)]
struct AddForm {
    address: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    admin: Option<String>,
}

async fn add_user(State(state): State<Arc<AppState>>, caller: Caller, Form(form): Form<AddForm>) -> Response {
    if let Err(e) = require_admin(&caller) {
        return error_page(&state, Some(&caller), e);
    }
    let new = NewUser {
        address: form.address,
        password: Some(form.password).filter(|p| !p.is_empty()),
        admin: form.admin.is_some(),
    };
    let s = state.clone();
    match blocking(move || api_admin::add(&s, &new)).await {
        Ok(_) => Redirect::to("/admin/users").into_response(),
        Err(e) => error_page(&state, Some(&caller), e),
    }
}

async fn remove_user(State(state): State<Arc<AppState>>, caller: Caller, Path(address): Path<String>) -> Response {
    if let Err(e) = require_admin(&caller) {
        return error_page(&state, Some(&caller), e);
    }
    let s = state.clone();
    match blocking(move || api_admin::remove(&s, &address)).await {
        Ok(()) => Redirect::to("/admin/users").into_response(),
        Err(e) => error_page(&state, Some(&caller), e),
    }
}

#[derive(Deserialize)]
struct AdminForm {
    admin: String,
}

async fn set_admin(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(address): Path<String>,
    Form(form): Form<AdminForm>,
) -> Response {
    if let Err(e) = require_admin(&caller) {
        return error_page(&state, Some(&caller), e);
    }
    let s = state.clone();
    let on = form.admin == "on";
    let set = blocking(move || {
        s.store.directory().set_admin(&address, on).map_err(|_| crate::errors::ApiError::not_found("no such user"))
    });
    match set.await {
        Ok(()) => Redirect::to("/admin/users").into_response(),
        Err(e) => error_page(&state, Some(&caller), e),
    }
}

#[derive(Deserialize)]
struct QuotaForm {
    bytes: u64,
    #[serde(default)]
    messages: u64,
}

async fn set_quota(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(address): Path<String>,
    Form(form): Form<QuotaForm>,
) -> Response {
    if let Err(e) = require_admin(&caller) {
        return error_page(&state, Some(&caller), e);
    }
    let s = state.clone();
    let q = api_admin::QuotaBody { bytes: form.bytes, messages: form.messages };
    match blocking(move || api_admin::quota(&s, &address, &q)).await {
        Ok(()) => Redirect::to("/admin/users").into_response(),
        Err(e) => error_page(&state, Some(&caller), e),
    }
}

async fn status_page(State(state): State<Arc<AppState>>, caller: Caller) -> Response {
    if let Err(e) = require_admin(&caller) {
        return error_page(&state, Some(&caller), e);
    }
    let s = state.clone();
    let status = blocking(move || Ok(api_admin::status_json(&s))).await.unwrap_or_default();
    state.pages.render("status.html", context! { me => me(&caller), status => status })
}
