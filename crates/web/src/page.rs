//! Templates and static assets (both embedded in the binary with rust-embed: no files to install, no
//! build step that needs the network), HTML responses, and the security headers on every response.

use axum::extract::{Path, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use minijinja::Environment;

/// The policy of every page: our own script and style only, no plugins, no framing by others, forms
/// only to us. `img-src` allows `data:` for inline images of sanitised mail; remote images need the
/// message page's own, wider policy (the user clicked "load images").
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; \
                       frame-ancestors 'none'";
/// The message page after "load images": the same, with images from anywhere.
pub const CSP_IMAGES: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: http: https:; \
                              connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; \
                              frame-ancestors 'none'";
/// Raw message source and downloads: nothing in them may run or load, even if opened directly.
pub const CSP_INERT: &str = "sandbox; default-src 'none'; frame-ancestors 'none'";

#[derive(rust_embed::Embed)]
#[folder = "templates/"]
struct Templates;

#[derive(rust_embed::Embed)]
#[folder = "assets/"]
struct Assets;

/// The compiled templates.
pub struct Pages {
    env: Environment<'static>,
}

impl Pages {
    /// Compiles every embedded template; a template that does not compile is a build defect and shows at
    /// the first test run.
    pub fn new() -> Pages {
        let mut env = Environment::new();
        for name in Templates::iter() {
            let Some(file) = Templates::get(&name) else { continue };
            let source = String::from_utf8_lossy(&file.data).into_owned();
            if let Err(e) = env.add_template_owned(name.to_string(), source) {
                tracing::error!(template = %name, error = %e, "template does not compile");
            }
        }
        Pages { env }
    }

    /// Renders `name` with `ctx` (HTML-escaped by default, as the names end in `.html`).
    pub fn render(&self, name: &str, ctx: minijinja::Value) -> Response {
        match self.env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(html) => Html(html).into_response(),
            Err(e) => {
                tracing::error!(template = name, error = %e, "cannot render a page");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            }
        }
    }
}

impl Default for Pages {
    fn default() -> Pages {
        Pages::new()
    }
}

/// `/assets/{name}`: the embedded script and style sheet.
pub async fn asset(Path(name): Path<String>) -> Response {
    let Some(file) = Assets::get(&name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let ctype = match name.rsplit('.').next() {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    };
    ([(header::CONTENT_TYPE, ctype), (header::CACHE_CONTROL, "no-cache")], file.data.into_owned()).into_response()
}

/// Security headers on every response; a handler's own `Content-Security-Policy` wins.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
