//! The admin pages: queue (with retry now, delete, bounce), users (add, remove, admin flag) and status.

use std::sync::Arc;

use axum::Router;

use crate::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
