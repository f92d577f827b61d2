//! The Prometheus recorder: installed once per process ([`install`]), rendered in the text exposition
//! format ([`render`]) by whoever serves `/metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::handles;
use crate::names::{Family, Kind, COMMIT_BUCKETS, FAMILIES, STORE_COMMIT_SECONDS};

/// The `Content-Type` of [`render`]'s text (the Prometheus text exposition format, version 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How often histogram samples are folded into their buckets when nobody scrapes: the recorder keeps
/// raw samples until then, so without it an unscraped server would hold every commit time it measured.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The installed recorder; cheap to clone. [`Handle::render`] gives the text `/metrics` serves.
#[derive(Clone)]
pub struct Handle {
    inner: PrometheusHandle,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

impl Handle {
    /// Every family in the Prometheus text exposition format (version 0.0.4), each with `# HELP` and
    /// `# TYPE`. Serve it as [`CONTENT_TYPE`].
    pub fn render(&self) -> String {
        self.inner.render()
    }
}

/// Whether [`install`] ran in this process (recording before it does nothing; callers may skip work
/// whose only use is a metric).
pub fn is_installed() -> bool {
    handles::get().is_some()
}

/// The same as [`Handle::render`].
pub fn render(handle: &Handle) -> String {
    handle.render()
}

static INSTALLED: OnceLock<Handle> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder, registers every mailroom
/// series and starts the upkeep thread; returns its handle. Idempotent: later calls (the web crate, a
/// second server in one test process) get the same handle.
pub fn install() -> Handle {
    INSTALLED.get_or_init(build).clone()
}

fn build() -> Handle {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(STORE_COMMIT_SECONDS.to_string()), COMMIT_BUCKETS)
        .expect("the commit buckets are not empty")
        .build_recorder();
    let inner = recorder.handle();
    // Registered against this recorder whatever the global one is, so mailroom's own series are always
    // rendered; then it becomes the global recorder for anything else that records through the facade.
    metrics::with_local_recorder(&recorder, || {
        FAMILIES.iter().for_each(describe);
        handles::register();
    });
    if metrics::set_global_recorder(recorder).is_err() {
        tracing::warn!("another metrics recorder was installed first; only mailroom's own series are exported");
    }
    let upkeep = inner.clone();
    let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || loop {
        std::thread::sleep(UPKEEP_INTERVAL);
        upkeep.run_upkeep();
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histograms are folded at scrapes only");
    }
    Handle { inner }
}

fn describe(f: &Family) {
    let unit = if f.name.ends_with("_seconds") {
        Some(Unit::Seconds)
    } else if f.name.ends_with("_bytes_total") {
        Some(Unit::Bytes)
    } else {
        None
    };
    match (f.kind, unit) {
        (Kind::Counter, Some(u)) => metrics::describe_counter!(f.name, u, f.help),
        (Kind::Counter, None) => metrics::describe_counter!(f.name, f.help),
        (Kind::Gauge, Some(u)) => metrics::describe_gauge!(f.name, u, f.help),
        (Kind::Gauge, None) => metrics::describe_gauge!(f.name, f.help),
        (Kind::Histogram, Some(u)) => metrics::describe_histogram!(f.name, u, f.help),
        (Kind::Histogram, None) => metrics::describe_histogram!(f.name, f.help),
    }
}
