//! Logging for `mailroom serve`: the filter from `MAILROOM_LOG` (else `RUST_LOG`, else `info`), checked
//! so that a typo is reported rather than silently dropped, and the line format (`--log-format text` or
//! `json`, one JSON object per line).

use tracing_subscriber::EnvFilter;

/// `--log-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines: time, level, message, then `key=value` fields.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, fields, spans), for log collectors.
    Json,
}

/// The level when neither variable is set.
const DEFAULT_FILTER: &str = "info";

/// The filter in force and, when a variable held something that is not a filter, the warning to print.
/// `MAILROOM_LOG` wins over `RUST_LOG`; an invalid value falls back to `info` (the server still starts:
/// a typo in a log setting must not take the mail down) and is named in the warning.
pub fn filter_from_env() -> (EnvFilter, Option<String>) {
    for var in ["MAILROOM_LOG", "RUST_LOG"] {
        let Some(value) = std::env::var_os(var) else { continue };
        let Some(text) = value.to_str() else {
            return (EnvFilter::new(DEFAULT_FILTER), Some(format!("{var} is not UTF-8; logging at {DEFAULT_FILTER}")));
        };
        if text.trim().is_empty() {
            continue;
        }
        return match parse_filter(text) {
            Ok(f) => (f, None),
            Err(e) => (
                EnvFilter::new(DEFAULT_FILTER),
                Some(format!("{var}={text:?} is not a valid log filter ({e}); logging at {DEFAULT_FILTER}")),
            ),
        };
    }
    (EnvFilter::new(DEFAULT_FILTER), None)
}

/// Level names a directive may be on its own.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Parses a filter strictly: every directive must parse (EnvFilter's own parser skips bad ones), and a
/// bare word must be a level: tracing would take `RUST_LOG=debgu` as "everything of the target `debgu`",
/// which silences every line without a word.
fn parse_filter(text: &str) -> Result<EnvFilter, String> {
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        directive.parse::<tracing_subscriber::filter::Directive>().map_err(|e| format!("{directive:?}: {e}"))?;
        let bare = !directive.contains(['=', '[']);
        if bare && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive)) {
            return Err(format!("{directive:?}: expected a level ({}) or TARGET=LEVEL", LEVELS.join(", ")));
        }
    }
    EnvFilter::builder().parse(ours_at_bare_levels(text)).map_err(|e| e.to_string())
}

/// mailroom's own crates (log targets), which a bare level such as `debug` is about.
const OUR_TARGETS: [&str; 10] = [
    "mailroom",
    "mailroom_proto",
    "mailroom_store",
    "mailroom_queue",
    "mailroom_server",
    "mailroom_relay",
    "mailroom_client",
    "mailroom_auth",
    "mailroom_web",
    "mailroom_metrics",
];

/// A bare `debug` or `trace` is meant for mailroom: its libraries (the DNS resolver, TLS, HTTP) stay at
/// `info` unless named (`debug,hickory_proto=debug`), or their internals (Rust `Debug` dumps of their
/// settings) would drown the session events. Other levels, and every `TARGET=LEVEL`, are as written.
fn ours_at_bare_levels(text: &str) -> String {
    let mut out = Vec::new();
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let is_verbose = ["debug", "trace"].iter().any(|l| l.eq_ignore_ascii_case(directive));
        if is_verbose {
            out.push("info".to_owned());
            out.extend(OUR_TARGETS.iter().map(|t| format!("{t}={directive}")));
        } else {
            out.push(directive.to_owned());
        }
    }
    out.join(",")
}

/// Logs to stderr in `format`. Lines are written by a background thread, so a session never waits on the
/// terminal or the log file; it is lossless (a full queue slows sessions down rather than dropping
/// lines). A bad filter variable is reported on stderr (and logged) before anything else.
pub fn init(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    use std::io::IsTerminal;
    let (filter, warning) = filter_from_env();
    if let Some(w) = &warning {
        eprintln!("mailroom: warning: {w}");
    }
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("mailroom-log")
        // Buffered: the log thread writes every line queued meanwhile in one write(2) and flushes each
        // time the queue is empty, so a line waits no longer than before (stderr itself is unbuffered,
        // one system call per line).
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
    }
    if let Some(w) = warning {
        tracing::warn!(problem = %w, "log filter ignored");
    }
    guard
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked_strictly() {
        for good in ["info", "debug", "mailroom_server=debug,warn", "warn,mailroom_relay=trace", "off"] {
            assert!(parse_filter(good).is_ok(), "{good}");
        }
        for bad in ["verbose", "debgu", "info,loud", "mailroom=shouty"] {
            assert!(parse_filter(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_bare_debug_is_for_mailroom_and_named_targets_are_as_written() {
        let f = ours_at_bare_levels("debug,hickory_proto=trace");
        assert!(f.starts_with("info,mailroom=debug,") && f.contains("mailroom_auth=debug"), "{f}");
        assert!(f.ends_with(",hickory_proto=trace"), "{f}");
        assert_eq!(ours_at_bare_levels("warn"), "warn");
        assert_eq!(ours_at_bare_levels("mailroom_server=debug,warn"), "mailroom_server=debug,warn");
    }
}
