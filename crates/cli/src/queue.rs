//! `mailroom queue list|show|flush|delete|bounce` and `mailq`: look at and operate the outbound queue
//! in the data directory.
//!
//! Reading (list, show) works from the files whether or not a server runs. Changes go through the
//! server when one runs, since it holds the queue in memory: the command leaves a request file that the
//! server picks up within about a second. `delete` acts on the files itself when no server runs (its
//! marker `queue/server.pid` is absent or names a dead process); `flush` and `bounce` need the server
//! (the bounce needs the relay to build the DSN), so their requests wait for the next start.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use mailroom_queue::envelope::from_unix;
use mailroom_queue::lock::is_server_running;
use mailroom_queue::request::ALL;
use mailroom_queue::{Envelope, Queue, Recipient, Request, State};

use crate::user::DataDirArgs;

/// Header bytes `queue show` prints at most (a message's header is rarely over a few KiB; a huge
/// one is cut, not streamed to a terminal whole).
pub const MAX_SHOWN_HEADER: usize = 64 * 1024;

#[derive(Debug, clap::Subcommand)]
pub enum QueueCommand {
    /// List the queued messages: id, age, size, sender, and each recipient with its state, next
    /// attempt and last reply.
    List {
        /// Print JSON (an array of envelopes) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one entry: envelope, state of each recipient, attempt history, message headers.
    Show {
        /// The queue id (as `queue list` shows it).
        id: String,
    },
    /// Ask the running server to attempt deferred recipients now (all entries without an ID).
    Flush {
        /// Queue ids to try now [default: all].
        ids: Vec<String>,
    },
    /// Remove entries without a bounce.
    #[command(arg_required_else_help = true)]
    Delete {
        /// Queue ids to drop.
        ids: Vec<String>,
    },
    /// Bounce every recipient not yet delivered, now (the sender gets a DSN).
    #[command(arg_required_else_help = true)]
    Bounce {
        /// Queue ids to bounce.
        ids: Vec<String>,
    },
}

pub fn run(cmd: QueueCommand, dirs: DataDirArgs) -> anyhow::Result<()> {
    let data_dir = dirs.resolve()?;
    if !data_dir.is_dir() {
        anyhow::bail!("no data directory at {}", data_dir.display());
    }
    let queue = Queue::open(&data_dir).context("opening the queue")?;
    let mut out = std::io::stdout().lock();
    match cmd {
        QueueCommand::List { json: true } => {
            writeln!(out, "{}", serde_json::to_string_pretty(&queue.list()?)?)?;
        }
        QueueCommand::List { json: false } => write!(out, "{}", format_list(&queue.list()?, SystemTime::now()))?,
        QueueCommand::Show { id } => {
            let env = queue.get(&id)?;
            write!(out, "{}", format_show(&env, SystemTime::now()))?;
            writeln!(out, "\nheaders:")?;
            out.write_all(&read_header(&queue.message_path(&id))?)?;
        }
        QueueCommand::Flush { ids } => {
            let ids = if ids.is_empty() { vec![ALL.to_string()] } else { ids };
            act(&queue, &data_dir, &ids, Request::Flush, &mut out)?;
        }
        QueueCommand::Delete { ids } => act(&queue, &data_dir, &ids, Request::Delete, &mut out)?,
        QueueCommand::Bounce { ids } => act(&queue, &data_dir, &ids, Request::Bounce, &mut out)?,
    }
    Ok(())
}

/// Files the request for each id (checking that it is queued), or deletes directly when no server
/// runs. Every id is checked before anything is done, so a typo changes nothing.
fn act(queue: &Queue, data_dir: &Path, ids: &[String], what: Request, out: &mut impl Write) -> anyhow::Result<()> {
    for id in ids.iter().filter(|id| id.as_str() != ALL || what != Request::Flush) {
        queue.get(id)?;
    }
    let is_running = is_server_running(data_dir);
    for id in ids {
        if what == Request::Delete && !is_running {
            queue.delete(id)?;
            writeln!(out, "{id}: deleted")?;
            continue;
        }
        queue.request(id, what)?;
        let target = if id == ALL { "the whole queue" } else { id.as_str() };
        if is_running {
            writeln!(out, "{target}: {what} requested; the server acts within about a second")?;
        } else {
            writeln!(out, "{target}: {what} requested; no server is running, it acts when it starts")?;
        }
    }
    Ok(())
}

/// The table of `queue list` / `mailq`.
pub fn format_list(entries: &[Envelope], now: SystemTime) -> String {
    let mut s = String::new();
    if entries.is_empty() {
        s.push_str("Mail queue is empty\n");
        return s;
    }
    let _ = writeln!(s, "{:<44} {:>6} {:>9}  SENDER", "ID", "AGE", "SIZE");
    for env in entries {
        let age = human(now.duration_since(env.arrival_time()).unwrap_or_default());
        let _ = writeln!(s, "{:<44} {:>6} {:>9}  {}", env.id, age, env.size, sender(env));
        for r in &env.rcpts {
            let _ = writeln!(s, "    {:<40} {:<9} next: {}", clean(&r.address), r.state.as_str(), next_attempt(r, now));
            if let Some(reply) = &r.last_reply {
                let _ = writeln!(s, "        ({})", clean(reply));
            }
        }
    }
    let _ = writeln!(s, "-- {} message(s)", entries.len());
    s
}

/// The envelope part of `queue show`.
pub fn format_show(env: &Envelope, now: SystemTime) -> String {
    let mut s = String::new();
    let age = human(now.duration_since(env.arrival_time()).unwrap_or_default());
    let _ = writeln!(s, "id:       {}", env.id);
    let _ = writeln!(s, "from:     {}", sender(env));
    let _ = writeln!(s, "arrival:  {} ({age} ago)", env.arrival);
    let _ = writeln!(s, "size:     {}", env.size);
    for (label, value) in [("auth", &env.auth), ("client", &env.client), ("envid", &env.envid)] {
        if let Some(v) = value {
            let _ = writeln!(s, "{label}:{:pad$}{}", "", clean(v), pad = 9 - label.len());
        }
    }
    if let Some(ret) = env.ret {
        let _ = writeln!(s, "ret:      {ret:?}");
    }
    for (i, r) in env.rcpts.iter().enumerate() {
        let _ = writeln!(
            s,
            "rcpt {i}:   {} {} (attempts {}, next: {})",
            clean(&r.address),
            r.state.as_str(),
            r.attempts,
            next_attempt(r, now)
        );
        for (label, value) in
            [("orcpt", &r.orcpt), ("remote", &r.remote_mta), ("status", &r.status), ("reply", &r.last_reply)]
        {
            if let Some(v) = value {
                let _ = writeln!(s, "    {label}: {}", clean(v));
            }
        }
        if let Some(n) = &r.notify {
            let _ = writeln!(s, "    notify: {n:?}");
        }
    }
    if !env.history.is_empty() {
        let _ = writeln!(s, "history:");
        for a in &env.history {
            let when = human(now.duration_since(from_unix(a.at)).unwrap_or_default());
            let _ = writeln!(s, "    {when} ago  rcpt {}  {}  {}", a.rcpt, a.state.as_str(), clean(&a.reply));
        }
    }
    s
}

fn sender(env: &Envelope) -> String {
    if env.from.is_empty() {
        "<>".to_string()
    } else {
        clean(&env.from)
    }
}

/// "now" for pending, the wait for deferred (or "now" once due), "-" for final.
fn next_attempt(r: &Recipient, now: SystemTime) -> String {
    match r.state {
        State::Pending => "now".into(),
        State::Deferred => match from_unix(r.next_attempt).duration_since(now) {
            Ok(wait) if wait.as_secs() > 0 => format!("in {}", human(wait)),
            _ => "now".into(),
        },
        _ => "-".into(),
    }
}

/// A duration for a human: 45s, 12m, 3h5m, 2d4h.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// Text from the queue shown on a terminal: control characters (escape sequences) replaced.
fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// The message's header (up to the empty line, at most [`MAX_SHOWN_HEADER`] bytes), control
/// characters other than tab and line ends replaced.
fn read_header(path: &Path) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut out = Vec::new();
    let mut line = Vec::new();
    while out.len() < MAX_SHOWN_HEADER {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 || line == b"\n" || line == b"\r\n" {
            break;
        }
        out.extend(line.iter().map(|&b| if b.is_ascii_control() && !matches!(b, b'\t' | b'\n') { b'?' } else { b }));
    }
    out.truncate(MAX_SHOWN_HEADER);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::from_secs(720)), "12m");
        assert_eq!(human(Duration::from_secs(3 * 3600 + 300)), "3h5m");
        assert_eq!(human(Duration::from_secs(2 * 86400 + 4 * 3600)), "2d4h");
    }

    #[test]
    fn list_shows_recipients_states_and_replies() {
        let now = from_unix(1_800_000_000);
        let mut env =
            Envelope::new("1.M1P2Q3.h", "", from_unix(1_800_000_000 - 125), 42, &["b@x.example", "c@y.example"]);
        env.rcpts[1].state = State::Deferred;
        env.rcpts[1].next_attempt = 1_800_000_000 + 300;
        env.rcpts[1].last_reply = Some("451 4.3.0 later\x1b[31m".into());
        let text = format_list(&[env], now);
        assert!(text.contains("1.M1P2Q3.h") && text.contains("2m") && text.contains("<>"), "{text}");
        assert!(text.contains("b@x.example") && text.contains("pending") && text.contains("next: now"), "{text}");
        assert!(text.contains("deferred") && text.contains("next: in 5m"), "{text}");
        assert!(text.contains("(451 4.3.0 later?[31m)"), "escape sequences are neutralised: {text}");
        assert_eq!(format_list(&[], now), "Mail queue is empty\n");
    }
}
