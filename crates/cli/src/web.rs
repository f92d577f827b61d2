//! The hook between `mailroom serve` and the web crate: binds `[http]` beside the SMTP listeners (same
//! process, same runtime) and runs it until `stop` turns true.

use mailroom_server::{Config, Server};

/// Binds the HTTP listener and spawns it; None when HTTP is off or the default address was busy.
pub async fn start(
    server: &Server,
    cfg: &Config,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let ctx = mailroom_web::WebContext {
        config: cfg.clone(),
        store: server.store(),
        queue: server.queue(),
        tls: server.tls(),
        smtp_listeners: server.local_addrs(),
        metrics: Some(metrics()),
        submitter: Some(server.submitter()),
    };
    let Some(web) = mailroom_web::bind(ctx).await? else { return Ok(None) };
    let shutdown = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    Ok(Some(tokio::spawn(web.run(shutdown))))
}

/// `/metrics`: the process's Prometheus registry (installed by `serve` before the server binds;
/// installing again returns the same handle).
fn metrics() -> mailroom_web::MetricsRender {
    let handle = mailroom_server::metrics::install();
    std::sync::Arc::new(move || handle.render())
}
