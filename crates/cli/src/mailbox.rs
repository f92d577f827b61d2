//! `mailroom mailbox list|show|delete`: read (and drop) what was delivered.
//!
//! `list` prints aligned columns (long values cut, marked with `…`), numbered oldest first, with each
//! message's state (`new`: not yet seen by a mail reader; `seen`: flagged S; `unseen`: in `cur/` without
//! S); a message without From or Date shows its Return-Path and the date of its newest Received header.
//! `show` and `delete` take the number from the list or a unique prefix of the id.

use std::io::Write;
use std::path::Path;

use mailroom_store::mailbox::MessageSummary;
use mailroom_store::{Mailbox, Store};

use crate::user::DataDirArgs;

#[derive(Debug, clap::Subcommand)]
pub enum MailboxCommand {
    /// List the messages of a mailbox: number, id, date, from, size, state, subject.
    List {
        /// The mailbox's address.
        address: String,
    },
    /// Print one message as stored.
    Show {
        /// The mailbox's address.
        address: String,
        /// The message: its number in `mailbox list`, or a unique prefix of its id.
        id: String,
    },
    /// Delete one message from the mailbox.
    Delete {
        /// The mailbox's address.
        address: String,
        /// The message: its number in `mailbox list`, or a unique prefix of its id.
        id: String,
    },
}

/// Widths of the list's columns; longer values are cut (the id without a mark, so that what is shown
/// still works as a prefix for `show`).
const ID_WIDTH: usize = 32;
const DATE_WIDTH: usize = 31;
const FROM_WIDTH: usize = 30;
const SUBJECT_WIDTH: usize = 60;

pub fn run(cmd: MailboxCommand, dirs: DataDirArgs) -> anyhow::Result<()> {
    let data_dir = dirs.existing()?;
    let store = Store::open(&data_dir)?;
    match cmd {
        MailboxCommand::List { address } => list(&store.mailbox(&address)?),
        MailboxCommand::Show { address, id } => {
            let mbox = store.mailbox(&address)?;
            let m = find(&mbox, &id)?;
            let bytes = std::fs::read(&m.path)?;
            std::io::stdout().lock().write_all(&bytes)?;
            Ok(())
        }
        MailboxCommand::Delete { address, id } => {
            let mbox = store.mailbox(&address)?;
            let m = find(&mbox, &id)?;
            std::fs::remove_file(&m.path)?;
            // The unlink is durable before we say it happened.
            if let Some(dir) = m.path.parent() {
                mailroom_store::fsync::sync_dir(dir)?;
            }
            println!("deleted message {} from {address}", m.id);
            Ok(())
        }
    }
}

fn list(mbox: &Mailbox) -> anyhow::Result<()> {
    let list = mbox.list()?;
    let mut out = std::io::stdout().lock();
    let num_width = list.len().to_string().len().max(1);
    let id_width = list.iter().map(|m| m.id.chars().count()).max().unwrap_or(2).clamp(2, ID_WIDTH);
    writeln!(
        out,
        "{:>num_width$}  {:<id_width$}  {:<DATE_WIDTH$}  {:<FROM_WIDTH$}  {:>9}  {:<6}  SUBJECT",
        "#", "ID", "DATE", "FROM", "SIZE", "STATE"
    )?;
    for (i, m) in list.iter().enumerate() {
        let (date, from) = date_and_from(m);
        writeln!(
            out,
            "{:>num_width$}  {:<id_width$}  {:<DATE_WIDTH$}  {:<FROM_WIDTH$}  {:>9}  {:<6}  {}",
            i + 1,
            m.id.chars().take(id_width).collect::<String>(),
            cut(&date, DATE_WIDTH),
            cut(&from, FROM_WIDTH),
            m.size,
            state(m),
            cut(&clean(m.subject.as_deref()), SUBJECT_WIDTH)
        )?;
    }
    writeln!(out, "{} message(s)", list.len())?;
    Ok(())
}

/// `new` (in new/), `seen` (the S flag of the Maildir info `:2,FLAGS`), else `unseen`.
fn state(m: &MessageSummary) -> &'static str {
    let name = m.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match name.rsplit_once(":2,") {
        _ if m.is_new => "new",
        Some((_, flags)) if flags.contains('S') => "seen",
        _ => "unseen",
    }
}

/// The Date and From headers, else the Return-Path and the date of the newest Received header that
/// mailroom (or the MTA before it) wrote at delivery.
fn date_and_from(m: &MessageSummary) -> (String, String) {
    let needs_trace = m.date.is_none() || m.from.is_none();
    let (received, return_path) = if needs_trace { trace_headers(&m.path) } else { (None, None) };
    let date = m.date.clone().or(received);
    let from = m.from.clone().or(return_path);
    (clean(date.as_deref()), clean(from.as_deref()))
}

/// (date of the first Received header, Return-Path address) of the message file.
fn trace_headers(path: &Path) -> (Option<String>, Option<String>) {
    use std::io::Read;
    let mut head = Vec::new();
    let read = std::fs::File::open(path)
        .and_then(|f| f.take(mailroom_store::mailbox::HEADER_READ_LIMIT).read_to_end(&mut head));
    let Some(msg) = read.ok().and_then(|_| mail_parser::MessageParser::default().parse_headers(&head)) else {
        return (None, None);
    };
    let unfold = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let received = msg
        .header_raw("Received")
        .and_then(|r| r.rsplit_once(';').map(|(_, date)| unfold(date)))
        .filter(|d| !d.is_empty());
    let return_path = msg.header_raw("Return-Path").map(|r| unfold(r).trim_matches(['<', '>']).to_owned()).map(|r| {
        if r.is_empty() {
            "<>".to_owned()
        } else {
            r
        }
    });
    (received, return_path)
}

/// Message `key` of the mailbox: its number in the list (1 is the oldest) when `key` is a number no
/// larger than the count, else the one message whose id (or file name) starts with `key`.
fn find(mbox: &Mailbox, key: &str) -> anyhow::Result<MessageSummary> {
    let list = mbox.list()?;
    if let Ok(n) = key.parse::<usize>() {
        if (1..=list.len()).contains(&n) {
            return Ok(list[n - 1].clone());
        }
    }
    let file_name = |m: &MessageSummary| m.path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_owned();
    let mut matches = list.iter().filter(|m| !key.is_empty() && (m.id.starts_with(key) || file_name(m) == key));
    match (matches.next(), matches.next()) {
        (Some(m), None) => Ok(m.clone()),
        (Some(_), Some(_)) => anyhow::bail!("{key:?} matches more than one message: give more of the id"),
        (None, _) => anyhow::bail!("no message {key:?} in {} (see `mailroom mailbox list`)", mbox.id().address()),
    }
}

/// Header values shown on a terminal: control characters (escape sequences) replaced, `-` for none.
fn clean(s: Option<&str>) -> String {
    s.unwrap_or("-").chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// `s` in at most `width` characters, a cut marked with `…`.
fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_mark_long_values_and_keep_short_ones() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("exactly10!", 10), "exactly10!");
        assert_eq!(cut("a much longer value", 10), "a much lo…");
        assert_eq!(cut("a much longer value", 10).chars().count(), 10);
        assert_eq!(clean(Some("a\x1b[31mb")), "a?[31mb");
    }
}
