//! The compose page: a form (From, To, Cc, Bcc, Subject, text), pre-filled to reply to or forward a
//! message (`/compose?folder=F&reply=ID` or `&forward=ID`), sent through `crate::compose::submit`
//! exactly as the API's `POST /api/v1/messages/send`.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Form, RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use minijinja::context;
use serde::Deserialize;

use crate::api::{self, blocking};
use crate::auth::Caller;
use crate::compose::{self, Draft};
use crate::errors::ApiError;
use crate::listener::Peer;
use crate::mail;
use crate::state::AppState;
use crate::ui::{error_page, me};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/compose", get(compose_page).post(send))
        .layer(axum::extract::DefaultBodyLimit::max(crate::state::MAX_COMPOSE_REQUEST))
}

fn render(state: &AppState, caller: &Caller, draft: &Draft, error: Option<ApiError>) -> Response {
    let d = context! {
        from => draft.from, to => draft.to, cc => draft.cc, bcc => draft.bcc, subject => draft.subject,
        text => draft.text, in_reply_to => draft.in_reply_to, references => draft.references,
    };
    let folders = mail::folders(&caller.mailbox);
    let status = error.as_ref().map(|e| e.status);
    let error = error.map(|e| format!("{} ({})", e.message, e.code));
    let mut r =
        state.pages.render("compose.html", context! { me => me(caller), folders => folders, d => d, error => error });
    if let Some(status) = status {
        *r.status_mut() = status;
    }
    r
}

/// `/compose`, empty or answering `reply=ID` / `forward=ID` in `folder=NAME` (default the inbox).
async fn compose_page(State(state): State<Arc<AppState>>, caller: Caller, RawQuery(q): RawQuery) -> Response {
    let q = api::query_map(q);
    let folder = q.get("folder").cloned().unwrap_or_else(|| mail::INBOX.to_owned());
    let (id, forward) = match (q.get("reply"), q.get("forward")) {
        (Some(id), _) => (Some(id.clone()), false),
        (None, Some(id)) => (Some(id.clone()), true),
        (None, None) => (None, false),
    };
    let Some(id) = id else { return render(&state, &caller, &Draft::default(), None) };
    let c = caller.clone();
    let draft = blocking(move || {
        let (_, entry) = api::message(&c, &folder, &id)?;
        Ok(compose::reply_draft(&api::read_message(&entry)?, forward))
    })
    .await;
    match draft {
        Ok(d) => render(&state, &caller, &d, None),
        Err(e) => error_page(&state, Some(&caller), e),
    }
}

#[derive(Deserialize)]
struct ComposeForm {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    cc: String,
    #[serde(default)]
    bcc: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    in_reply_to: String,
    #[serde(default)]
    references: String,
}

impl ComposeForm {
    fn draft(self) -> Draft {
        let from = self.from.trim();
        Draft {
            from: (!from.is_empty()).then(|| from.to_owned()),
            to: compose::split_list(&self.to),
            cc: compose::split_list(&self.cc),
            bcc: compose::split_list(&self.bcc),
            subject: self.subject,
            text: self.text,
            in_reply_to: Some(self.in_reply_to).filter(|s| !s.trim().is_empty()),
            references: self.references.split_whitespace().map(str::to_owned).collect(),
            // The page always keeps a copy in Sent.
            save_copy: None,
        }
    }
}

/// Sends; back to the inbox with a note, or the form again with the error and everything typed.
async fn send(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Form(form): Form<ComposeForm>,
) -> Response {
    let draft = form.draft();
    match compose::submit(&state, &caller, peer, &draft).await {
        Ok(sent) => Redirect::to(&format!("/folders/INBOX?sent={}", crate::ui::urlencode(&sent.id))).into_response(),
        Err(e) => render(&state, &caller, &draft, Some(e)),
    }
}
