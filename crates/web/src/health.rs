//! The endpoints without a login: `/healthz` (the process answers), `/readyz` (it can serve users) and
//! `/metrics` (loopback, or `[http] metrics_token`).

use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::listener::Peer;
use crate::state::AppState;

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
    let expected = state.config.http.metrics_token.as_deref();
    if !is_metrics_allowed(peer.is_loopback(), expected, crate::auth::bearer(&headers)) {
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "metrics need a token\n")
            .into_response();
    }
    let body = render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

/// Loopback clients may scrape; others only with the configured token (and never without one).
fn is_metrics_allowed(is_loopback: bool, expected: Option<&str>, given: Option<&str>) -> bool {
    is_loopback || matches!((expected, given), (Some(e), Some(g)) if crate::tokens::same(e.as_bytes(), g.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::is_metrics_allowed;

    #[test]
    fn metrics_need_loopback_or_the_token() {
        let token = Some("0123456789abcdef0123");
        assert!(is_metrics_allowed(true, None, None));
        assert!(!is_metrics_allowed(false, None, None), "no token configured: loopback only");
        assert!(!is_metrics_allowed(false, None, Some("anything")));
        assert!(!is_metrics_allowed(false, token, None));
        assert!(!is_metrics_allowed(false, token, Some("0123456789abcdef0124")));
        assert!(is_metrics_allowed(false, token, token));
    }
}
