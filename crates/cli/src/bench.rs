//! `mailroom bench`: a load generator in the spirit of Postfix's smtp-source, built on mailroom's client.
//!
//! N sessions run at once; each sends up to K messages over one connection (pipelined when offered),
//! then reconnects, until M messages have been sent. At the end: messages/s, MB/s, the latency of each
//! transaction (MAIL through the reply to end-of-data) at p50/p90/p99/max, and errors by reply code.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailroom_client::{Client, Envelope, Message, Tls};
use mailroom_proto::{Address, ForwardPath, ReversePath};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Server to load, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:2525")]
    pub server: String,
    /// Concurrent sessions.
    #[arg(long, default_value_t = 10)]
    pub connections: usize,
    /// Messages in all.
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,
    /// Messages per session before it reconnects (0: one session keeps going).
    #[arg(long, default_value_t = 100)]
    pub per_connection: u64,
    /// Size of each message in octets (headers included).
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Recipients per message, taken from --to in order.
    #[arg(long, default_value_t = 1)]
    pub recipients: usize,
    /// Recipient address, repeatable [default: postmaster@localhost].
    #[arg(long)]
    pub to: Vec<String>,
    /// Envelope sender.
    #[arg(long, default_value = "bench@example.org")]
    pub from: String,
    /// STARTTLS before sending.
    #[arg(long, conflicts_with = "tls")]
    pub starttls: bool,
    /// TLS from the first byte (port-465 style).
    #[arg(long)]
    pub tls: bool,
    /// AUTH user (needs --password-stdin).
    #[arg(long, requires = "password_stdin")]
    pub user: Option<String>,
    /// Read the AUTH password from the first line of stdin.
    #[arg(long)]
    pub password_stdin: bool,
    /// Allow AUTH without TLS, to a server on a loopback address only.
    #[arg(long, requires = "user")]
    pub allow_plaintext_auth: bool,
    /// Trust this CA / self-signed certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub cafile: Option<std::path::PathBuf>,
    /// Skip certificate verification.
    #[arg(long)]
    pub insecure: bool,
    /// Per-step timeout, e.g. "30s".
    #[arg(long, default_value = "60s")]
    pub timeout: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Measure the cost of a connection on its own: each of --messages rounds connects, reads the
    /// greeting, says EHLO and QUIT, and sends no mail (rates and latencies are then per connection).
    #[arg(long)]
    pub connect_only: bool,
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: BTreeMap<String, u64>,
    delivered: u64,
}

pub fn run(args: BenchArgs) -> ExitCode {
    match run_inner(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mailroom bench: {e:#}");
            ExitCode::from(64)
        }
    }
}

/// What the flags ask for, checked.
struct Plan {
    timeout: Duration,
    tls: Tls,
    password: Option<String>,
    message: Arc<Vec<u8>>,
    envelope: Arc<Envelope>,
}

fn plan(args: &BenchArgs) -> anyhow::Result<Plan> {
    let timeout = mailroom_server::config::parse_duration(&args.timeout).map_err(anyhow::Error::msg)?;
    let from = ReversePath::Mailbox(Address::parse(&args.from).map_err(|e| anyhow::anyhow!("--from: {e}"))?);
    let to_list = if args.to.is_empty() { vec!["postmaster@localhost".to_owned()] } else { args.to.clone() };
    if args.recipients == 0 || args.recipients > to_list.len() {
        anyhow::bail!("--recipients {} needs at least that many --to addresses", args.recipients);
    }
    let to: Vec<ForwardPath> = to_list[..args.recipients]
        .iter()
        .map(|a| Address::parse(a).map(ForwardPath::Mailbox).map_err(|e| anyhow::anyhow!("--to {a}: {e}")))
        .collect::<Result<_, _>>()?;
    if args.connections == 0 {
        anyhow::bail!("--connections must be at least 1");
    }
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        Some(line.trim_end_matches(['\r', '\n']).to_owned())
    } else {
        None
    };
    let tls = if args.tls {
        Tls::Implicit
    } else if args.starttls {
        Tls::StartTls
    } else {
        Tls::None
    };
    let message = Arc::new(make_message(&args.from, &to_list[0], args.size));
    Ok(Plan { timeout, tls, password, message, envelope: Arc::new(Envelope::new(from, to)) })
}

fn progress_bar(args: &BenchArgs) -> indicatif::ProgressBar {
    if args.quiet || args.json {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(args.messages);
    b.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} messages  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b
}

fn run_inner(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let plan = plan(&args)?;
    let remaining = Arc::new(AtomicU64::new(args.messages));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let bar = progress_bar(&args);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..args.connections {
            let ctx = Worker {
                server: args.server.clone(),
                tls: plan.tls,
                timeout: plan.timeout,
                credentials: args.user.clone().zip(plan.password.clone()),
                cafile: args.cafile.clone(),
                insecure: args.insecure,
                allow_plaintext_auth: args.allow_plaintext_auth,
                per_connection: args.per_connection,
                connect_only: args.connect_only,
                message: plan.message.clone(),
                envelope: plan.envelope.clone(),
                remaining: remaining.clone(),
                tally: tally.clone(),
                bar: bar.clone(),
            };
            tasks.push(tokio::spawn(ctx.run()));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let t = std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(report(&args, t, elapsed, plan.message.len()))
}

/// Prints the results (as text or JSON); exit 0 without errors, else 75.
fn report(args: &BenchArgs, mut t: Tally, elapsed: Duration, size: usize) -> ExitCode {
    t.latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if t.latencies.is_empty() {
            return 0.0;
        }
        let i = ((p / 100.0) * (t.latencies.len() - 1) as f64).round() as usize;
        t.latencies[i].as_secs_f64() * 1000.0
    };
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rate = t.delivered as f64 / secs;
    let mbps = t.delivered as f64 * size as f64 / secs / 1e6;
    let errors: u64 = t.errors.values().sum();
    if args.json {
        let v = serde_json::json!({
            "server": args.server,
            "connections": args.connections,
            "connect_only": args.connect_only,
            "messages": args.messages,
            "size": size,
            "recipients": args.recipients,
            "delivered": t.delivered,
            "errors": errors,
            "errors_by_code": t.errors,
            "seconds": secs,
            "messages_per_second": rate,
            "mb_per_second": mbps,
            "latency_ms": {"p50": pct(50.0), "p90": pct(90.0), "p99": pct(99.0), "max": pct(100.0)},
        });
        println!("{v}");
    } else if args.connect_only {
        println!(
            "{} connections (greeting, EHLO, QUIT) over {} session(s) in {secs:.2} s",
            t.delivered, args.connections
        );
        println!("{rate:.1} connections/s");
        println!(
            "latency (connect to the close after QUIT): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            pct(50.0),
            pct(90.0),
            pct(99.0),
            pct(100.0)
        );
    } else {
        println!(
            "{} messages of {size} octets to {} recipient(s) over {} session(s) in {secs:.2} s",
            t.delivered, args.recipients, args.connections
        );
        println!("{rate:.1} messages/s, {mbps:.2} MB/s");
        println!(
            "latency (MAIL to end-of-data reply): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            pct(50.0),
            pct(90.0),
            pct(99.0),
            pct(100.0)
        );
    }
    if !args.json && errors > 0 {
        println!("errors: {errors}");
        for (k, n) in &t.errors {
            println!("  {k}: {n}");
        }
    }
    if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(75)
    }
}

struct Worker {
    server: String,
    tls: Tls,
    timeout: Duration,
    credentials: Option<(String, String)>,
    cafile: Option<std::path::PathBuf>,
    insecure: bool,
    allow_plaintext_auth: bool,
    per_connection: u64,
    connect_only: bool,
    message: Arc<Vec<u8>>,
    envelope: Arc<Envelope>,
    remaining: Arc<AtomicU64>,
    tally: Arc<Mutex<Tally>>,
    bar: indicatif::ProgressBar,
}

impl Worker {
    /// Takes one message off the shared count; false when none are left.
    fn claim(&self) -> bool {
        self.remaining.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok()
    }

    fn error(&self, key: String) {
        *self.tally.lock().unwrap_or_else(|e| e.into_inner()).errors.entry(key).or_default() += 1;
        self.bar.inc(1);
    }

    fn builder(&self) -> mailroom_client::ClientBuilder {
        let builder = Client::builder(self.server.clone()).timeout(self.timeout).tls(self.tls);
        let builder = match &self.credentials {
            Some((u, p)) => builder.credentials(u.clone(), p.clone()),
            None => builder,
        };
        let builder = match &self.cafile {
            Some(f) => builder.cafile(f.clone()),
            None => builder,
        };
        builder.insecure(self.insecure).allow_plaintext_auth(self.allow_plaintext_auth)
    }

    fn handle_success(&self, t0: Instant) {
        let mut t = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        t.latencies.push(t0.elapsed());
        t.delivered += 1;
        drop(t);
        self.bar.inc(1);
    }

    async fn run(self) {
        while self.claim() {
            let t0 = Instant::now();
            let client = match self.builder().connect().await {
                Ok(c) => c,
                Err(e) => {
                    self.error(error_key(&e));
                    continue;
                }
            };
            if self.connect_only {
                // The round counts once the server has answered QUIT: the whole connection, timed.
                match client.quit().await {
                    Ok(()) => self.handle_success(t0),
                    Err(e) => self.error(error_key(&e)),
                }
                continue;
            }
            self.send_messages(client).await;
        }
    }

    /// Sends messages over one connection until `per_connection` or the shared count runs out, then QUIT.
    async fn send_messages(&self, mut client: Client) {
        let mut sent = 0u64;
        loop {
            let t0 = Instant::now();
            match client.send(&self.envelope, Message::from_bytes(&self.message)).await {
                Ok(outcome) if outcome.refused().next().is_none() => self.handle_success(t0),
                Ok(outcome) => {
                    let code = outcome.refused().next().and_then(|r| r.result.as_ref().err().map(|e| e.code));
                    self.error(code.map_or("refused".into(), |c| c.to_string()));
                }
                Err(e) => {
                    self.error(error_key(&e));
                    break;
                }
            }
            sent += 1;
            if (self.per_connection > 0 && sent >= self.per_connection) || !self.claim() {
                break;
            }
        }
        let _ = client.quit().await;
    }
}

fn error_key(e: &mailroom_client::Error) -> String {
    match e.reply() {
        Some(r) => r.code.to_string(),
        None => format!("{e}").split(':').next().unwrap_or("error").to_owned(),
    }
}

/// A plain text message of exactly `size` octets (at least its headers), CRLF line endings.
fn make_message(from: &str, to: &str, size: usize) -> Vec<u8> {
    let mut m = format!("From: {from}\r\nTo: {to}\r\nSubject: mailroom bench\r\nMessage-ID: <bench@mailroom>\r\n\r\n")
        .into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog; mailroom bench filler text....\r\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    if m.len() + 2 < size {
        m.extend(std::iter::repeat_n(b'x', size - m.len() - 2));
        m.extend_from_slice(b"\r\n");
    }
    m
}

#[cfg(test)]
mod tests {
    #[test]
    fn message_has_the_asked_size() {
        for size in [1024, 100 * 1024, 4000] {
            let m = super::make_message("a@b", "c@d", size);
            assert_eq!(m.len(), size);
            assert!(m.ends_with(b"\r\n"));
        }
    }
}
