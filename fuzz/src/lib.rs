//! Shared harness code for the fuzz targets in `fuzz_targets/`: chunk splitting, the input formats of the
//! session targets, a server-session driver that checks the session's invariants at every step, and the
//! encoders that `examples/write_seeds.rs` uses to write seed corpora in those formats.
//!
//! Every input format is plain bytes with a short header, not `arbitrary`'s opaque encoding, so that a
//! seed is a readable SMTP transcript and libFuzzer's byte mutations (insert `\r`, splice two sessions)
//! stay meaningful.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mailroom_proto::reply::{Enhanced, Reply};
use mailroom_proto::server::{self, Config, Decision, Event, Session};

// ---------------------------------------------------------------------------------------------------
// Chunking

/// A small deterministic PRNG (xorshift64*), seeded from the fuzz input.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Splits `len` bytes into chunk lengths. `class` picks the typical chunk size, so the fuzzer can reach
/// byte-at-a-time feeding as well as everything-at-once.
pub fn chunk_lengths(len: usize, seed: u64, class: u8) -> Vec<usize> {
    let max = match class % 8 {
        0 => 1,
        1 => 2,
        2 => 3,
        3 => 7,
        4 => 16,
        5 => 64,
        6 => 1024,
        _ => usize::MAX,
    };
    // At most about 2048 chunks, so that long (repeated) streams stay fast to run byte-wise.
    let min = len / 2048 + 1;
    let max = max.max(min);
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    let mut left = len;
    while left > 0 {
        let n = if max == usize::MAX { left } else { min + rng.below((max - min + 1) as u64) as usize };
        let n = n.min(left);
        out.push(n);
        left -= n;
    }
    out
}

/// Splits `bytes` at the lengths of [`chunk_lengths`].
pub fn chunks(bytes: &[u8], seed: u64, class: u8) -> Vec<&[u8]> {
    let mut at = 0;
    chunk_lengths(bytes.len(), seed, class)
        .into_iter()
        .map(|n| {
            let c = &bytes[at..at + n];
            at += n;
            c
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// Server output

/// Checks that `out` is a sequence of whole replies: every line `DDD[ -]text\r\n` with a code 2xx-5xx,
/// text free of control characters, the lines of a multi-line reply sharing one code. Returns the
/// number of complete replies. Panics (the fuzz failure) otherwise.
pub fn check_replies(out: &[u8]) -> usize {
    let mut replies = 0;
    let mut open: Option<[u8; 3]> = None;
    let mut rest = out;
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or_else(|| panic!("output does not end in CRLF: {:?}", lossy(rest)));
        let line = &rest[..end];
        rest = &rest[end + 2..];
        assert!(line.len() >= 4, "short reply line {:?}", lossy(line));
        let code: [u8; 3] = line[..3].try_into().unwrap();
        assert!(
            (b'2'..=b'5').contains(&code[0]) && code[1..].iter().all(u8::is_ascii_digit),
            "bad reply code in {:?}",
            lossy(line)
        );
        if let Some(first) = open {
            assert_eq!(first, code, "multi-line reply changes code: {:?}", lossy(line));
        }
        let text =
            std::str::from_utf8(&line[4..]).unwrap_or_else(|_| panic!("reply text is not UTF-8: {:?}", lossy(line)));
        assert!(!text.chars().any(char::is_control), "control character in reply text {:?}", lossy(line));
        match line[3] {
            b'-' => open = Some(code),
            b' ' => {
                open = None;
                replies += 1;
            }
            _ => panic!("bad separator in reply line {:?}", lossy(line)),
        }
    }
    assert!(open.is_none(), "output ends inside a multi-line reply");
    replies
}

pub fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// True when `msg` holds a CR not followed by LF or an LF not preceded by CR.
pub fn has_bare_line_ending(msg: &[u8]) -> bool {
    msg.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => msg.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || msg[i - 1] != b'\r',
        _ => false,
    })
}

// ---------------------------------------------------------------------------------------------------
// The session input format

/// Header length of the session targets' input.
pub const HEADER: usize = 8;

/// The first [`HEADER`] bytes of a session target's input: how to split, configure and answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Knobs {
    /// Seed of the chunk splitter (bytes 0-1).
    pub split_seed: u16,
    /// Chunk size class, see [`chunk_lengths`] (byte 2).
    pub split_class: u8,
    /// Byte 3: bits 0-1 max_message_size, 2-3 max_recipients, 4-5 max_errors, bit 6 repeat the stream,
    /// bit 7 may delay answers (the shell keeps reading while a decision is pending).
    pub config: u8,
    /// Byte 4: bits 0-5 how many extra times (x4) the stream is repeated when bit 6 of `config` is set;
    /// bits 6-7 the listener: 0 plain, 1 STARTTLS and AUTH under TLS, 2 AUTH in plaintext,
    /// 3 STARTTLS, AUTH in plaintext and AUTH required for MAIL.
    pub repeat: u8,
    /// Byte 5: what happens after the last byte: 0-3 nothing, 4 EOF, 5 timeout, 6 shutdown,
    /// 7 shutdown and its deadline; the next bits put a shutdown in the middle of the stream.
    pub end: u8,
    /// Bytes 6-7: seed of the answers (accept, or which refusal).
    pub answer_seed: u16,
}

impl Knobs {
    pub fn parse(h: &[u8]) -> Knobs {
        let b = |i: usize| h.get(i).copied().unwrap_or(0);
        Knobs {
            split_seed: u16::from_le_bytes([b(0), b(1)]),
            split_class: b(2),
            config: b(3),
            repeat: b(4),
            end: b(5),
            answer_seed: u16::from_le_bytes([b(6), b(7)]),
        }
    }
    pub fn to_bytes(self) -> [u8; HEADER] {
        let s = self.split_seed.to_le_bytes();
        let a = self.answer_seed.to_le_bytes();
        [s[0], s[1], self.split_class, self.config, self.repeat, self.end, a[0], a[1]]
    }
    pub fn config(self) -> Config {
        let c = self.config;
        Config {
            hostname: "mx.fuzz.example".into(),
            max_message_size: [server::DEFAULT_MAX_MESSAGE_SIZE, 0, 10, 1000][usize::from(c & 3)],
            max_recipients: [server::DEFAULT_MAX_RECIPIENTS, 0, 1, 2][usize::from((c >> 2) & 3)],
            max_errors: [server::DEFAULT_MAX_ERRORS, 1, 3, 1000][usize::from((c >> 4) & 3)],
            starttls: matches!(self.repeat >> 6, 1 | 3),
            auth: self.repeat >> 6 != 0,
            allow_plaintext_auth: matches!(self.repeat >> 6, 2 | 3),
            auth_required: self.repeat >> 6 == 3,
            max_auth_failures: [server::DEFAULT_MAX_AUTH_FAILURES, 1][usize::from(c & 1)],
            ..Config::default()
        }
    }
    pub fn repeat_count(self) -> usize {
        if self.config & 0x40 != 0 {
            1 + 4 * usize::from(self.repeat & 0x3f)
        } else {
            1
        }
    }
    pub fn may_delay(self) -> bool {
        self.config & 0x80 != 0
    }
}

// ---------------------------------------------------------------------------------------------------
// The server-session driver

/// The longest stream the driver feeds (after repetition): enough to pass `MAX_BUFFERED_INPUT` several
/// times, small enough to keep executions fast.
pub const MAX_STREAM: usize = 320 * 1024;

/// The biggest chunk the driver hands over in one `handle_input` call.
pub const MAX_CHUNK: usize = 16 * 1024;

/// The most unparsed input while nothing waits: one SASL response line (RFC 4954 §4: 12288 octets),
/// the longest line the session reads (`server::auth::MAX_RESPONSE_LINE`, not public).
pub const MAX_UNWAITING_INPUT: usize = 12288;

/// What a session run produced, for target-specific checks.
#[derive(Debug, Default)]
pub struct Transcript {
    /// Everything `poll_transmit` gave, in order.
    pub output: Vec<u8>,
    /// Every message that reached `DataEnd`, with the answer given to it (true: accepted).
    pub messages: Vec<(Vec<u8>, bool)>,
    /// True when the whole stream was fed (the session did not close first).
    pub fed_all: bool,
    pub closed: bool,
}

/// The shell around a [`Session`] in a fuzz run: feeds chunks, answers events as the knobs say, and
/// asserts the session's invariants after every call.
pub struct Driver {
    pub s: Session,
    pub now: Instant,
    knobs: Knobs,
    answers: Rng,
    config: Arc<Config>,
    /// An event that waits for an answer, with how many more feeds its answer may be delayed.
    pending: Option<(Event, u32)>,
    /// DataStart was accepted and no DataEnd/DataAborted has come yet.
    data_open: bool,
    /// DataStart was seen and answered; DataEnd may follow.
    message: Vec<u8>,
    closed_event: bool,
    checks: u32,
    pub t: Transcript,
}

impl Driver {
    pub fn new(knobs: Knobs) -> Driver {
        Self::with_config(knobs, knobs.config())
    }

    pub fn with_config(knobs: Knobs, config: Config) -> Driver {
        let config = Arc::new(config);
        let now = Instant::now();
        let s = Session::new(config.clone(), now);
        let mut d = Driver {
            s,
            now,
            knobs,
            answers: Rng::new(u64::from(knobs.answer_seed) ^ 0xA5A5),
            config,
            pending: None,
            data_open: false,
            message: Vec::new(),
            closed_event: false,
            checks: 0,
            t: Transcript::default(),
        };
        d.pump();
        assert!(d.t.output.starts_with(b"220 "), "no 220 greeting");
        d
    }

    /// Feeds the stream in chunks as the knobs say, answering events; then the end action, then answers
    /// whatever is still pending.
    pub fn run(&mut self, stream: &[u8]) {
        let k = self.knobs;
        let mid_shutdown = (k.end >> 3) != 0;
        let mut lens = chunk_lengths(stream.len(), u64::from(k.split_seed), k.split_class);
        // Keep each handle_input call bounded, so that the buffer bound below is meaningful.
        lens = lens
            .into_iter()
            .flat_map(|n| {
                std::iter::repeat_n(MAX_CHUNK, n / MAX_CHUNK).chain((n % MAX_CHUNK > 0).then_some(n % MAX_CHUNK))
            })
            .collect();
        let shutdown_at = usize::from(k.end >> 3) * lens.len() / 32;
        let mut at = 0;
        let mut fed_all = true;
        for (i, n) in lens.into_iter().enumerate() {
            if mid_shutdown && i == shutdown_at {
                self.s.handle_shutdown();
                self.pump();
            }
            // A real shell reads only while the session wants input; past that it must answer.
            while !self.s.wants_input() && !self.s.is_closed() {
                assert!(self.s.is_waiting(), "wants_input() is false while nothing is pending");
                assert!(self.pending.is_some(), "session waits but emitted no event to answer");
                self.answer_now();
            }
            if self.s.is_closed() {
                fed_all = false;
                break;
            }
            self.now += Duration::from_millis(10);
            self.s.handle_input(&stream[at..at + n], self.now);
            at += n;
            self.pump();
            self.check_buffer(!self.s.wants_input());
            self.maybe_answer();
        }
        self.t.fed_all = fed_all;
        self.check_buffer(true);
        // Answer what is still pending before the end action, so that replies owed are sent.
        while self.pending.is_some() {
            self.answer_now();
        }
        self.check_buffer(true);
        match k.end & 7 {
            4 => self.s.handle_eof(),
            5 => {
                let deadline = self.s.poll_timeout();
                if let Some(d) = deadline {
                    assert!(d > self.now, "deadline in the past");
                }
                self.now += Duration::from_secs(3600);
                self.s.handle_timeout(self.now);
                if deadline.is_some() {
                    assert!(self.s.is_closed(), "timeout passed but the session is open");
                }
            }
            6 => self.s.handle_shutdown(),
            7 => {
                self.s.handle_shutdown();
                self.pump();
                while self.pending.is_some() {
                    self.answer_now();
                }
                self.s.handle_shutdown_deadline();
                assert!(self.s.is_closed(), "open after the shutdown deadline");
            }
            _ => {}
        }
        self.pump();
        while self.pending.is_some() {
            self.answer_now();
        }
        self.t.closed = self.s.is_closed();
        if self.s.is_closed() {
            assert!(self.closed_event, "closed without a Close event");
            assert!(!self.data_open, "closed with a message still open");
        }
    }

    /// Drains output and events, checking each; lets every error delay pass at once (the session goes on
    /// with its buffered input after each).
    fn pump(&mut self) {
        self.drain();
        while self.s.poll_delay().is_some() {
            assert!(self.s.is_delayed() || self.s.is_closed(), "a delay while the session holds nothing back");
            assert!(self.s.poll_timeout().is_none(), "a timeout runs while the shell owes a delay");
            self.s.handle_delay_elapsed(self.now);
            self.drain();
        }
        assert!(!self.s.is_delayed(), "delayed, but no delay to wait for");
        self.check_states();
    }

    fn drain(&mut self) {
        while let Some(out) = self.s.poll_transmit() {
            assert!(!self.closed_event, "output after Close: {:?}", lossy(&out));
            assert!(
                !matches!(self.pending, Some((Event::StartTls, _))),
                "output between STARTTLS and the handshake (plaintext injection?): {:?}",
                lossy(&out)
            );
            assert!(!out.is_empty(), "poll_transmit gave an empty buffer");
            // Each transmit holds whole replies.
            check_replies(&out);
            self.t.output.extend_from_slice(&out);
        }
        while let Some(e) = self.s.poll_event() {
            assert!(!self.closed_event, "event after Close: {e:?}");
            assert!(self.pending.is_none(), "event {e:?} while {:?} waits for an answer", self.pending);
            match &e {
                Event::Mail { .. } | Event::Rcpt { .. } => {
                    assert!(!self.data_open, "{e:?} while a message is open");
                    self.wait(e);
                }
                Event::DataStart => {
                    assert!(!self.data_open, "DataStart while a message is open");
                    self.wait(e);
                }
                Event::Data(bytes) => {
                    assert!(self.data_open, "Data outside DataStart..DataEnd");
                    assert!(!bytes.is_empty(), "empty Data event");
                    self.message.extend_from_slice(bytes);
                    assert!(
                        self.message.len() as u64 <= self.config.max_message_size,
                        "{} message bytes passed on, limit {}",
                        self.message.len(),
                        self.config.max_message_size
                    );
                }
                Event::DataEnd => {
                    assert!(self.data_open, "DataEnd without an open message");
                    assert!(
                        !has_bare_line_ending(&self.message),
                        "message with a bare CR or LF reached DataEnd: {:?}",
                        lossy(&self.message)
                    );
                    self.wait(e);
                }
                Event::DataAborted(_) => {
                    assert!(self.data_open, "DataAborted without an open message");
                    self.data_open = false;
                    self.message.clear();
                }
                Event::StartTls => {
                    assert!(!self.data_open && self.s.transaction().is_none(), "STARTTLS inside a transaction");
                    assert!(!self.s.is_tls(), "STARTTLS under TLS");
                    self.wait(e);
                }
                Event::Auth(creds) => {
                    assert!(!self.data_open && self.s.transaction().is_none(), "AUTH inside a transaction");
                    assert!(
                        !creds.username.is_empty() && !creds.username.chars().any(char::is_control),
                        "AUTH username {:?}",
                        creds.username
                    );
                    self.wait(e);
                }
                Event::Close => {
                    assert!(self.s.is_closed(), "Close event but is_closed() is false");
                    assert!(!self.data_open, "Close with a message open and no DataAborted");
                    self.closed_event = true;
                }
            }
        }
    }

    /// What the session says about itself matches the events seen.
    fn check_states(&mut self) {
        if self.pending.is_some() {
            assert!(self.s.is_waiting(), "an event waits for an answer but is_waiting() is false");
            assert!(self.s.poll_timeout().is_none(), "a timeout runs while the shell owes an answer");
        } else {
            assert!(!self.s.is_waiting(), "is_waiting() with no event to answer");
            assert!(self.s.wants_input() || self.s.is_closed(), "wants_input() false while nothing waits");
        }
        if self.s.is_closed() {
            assert!(!self.s.wants_input(), "closed but wants input");
        }
    }

    fn wait(&mut self, e: Event) {
        let delay = if self.knobs.may_delay() { self.answers.below(4) as u32 } else { 0 };
        self.pending = Some((e, delay));
    }

    /// Answers now unless the knobs chose to delay this answer by some feeds.
    fn maybe_answer(&mut self) {
        loop {
            match &mut self.pending {
                Some((_, 0)) => self.answer_now(),
                Some((_, n)) => {
                    *n -= 1;
                    return;
                }
                None => return,
            }
        }
    }

    fn answer_now(&mut self) {
        let Some((e, _)) = self.pending.take() else { return };
        let pick = self.answers.below(16);
        if e == Event::StartTls {
            // The shell does the handshake; one in eight fails and the connection is dropped.
            if pick == 0 {
                self.s.handle_eof();
            } else {
                self.s.handle_tls_established(self.now);
                assert!(self.s.is_tls() && self.s.helo().is_none(), "state kept across STARTTLS");
            }
            self.pump();
            self.check_buffer(false);
            return;
        }
        let decision = match pick {
            0..=9 => Decision::Accept,
            10 => Decision::Reply(Reply::new(250, Enhanced(2, 0, 0), "fuzz\r\nok\0")),
            11 | 12 => Decision::Reply(Reply::new(451, Enhanced(4, 3, 0), "fuzz later")),
            13 => Decision::Reply(Reply::new(550, Enhanced(5, 1, 1), "fuzz no")),
            14 => Decision::Reply(Reply::plain(354, "fuzz go")),
            _ => Decision::Reply(Reply::new(552, Enhanced(5, 3, 4), "fuzz big").line("more")),
        };
        let positive =
            matches!(&decision, Decision::Accept) || matches!(&decision, Decision::Reply(r) if r.is_positive());
        match e {
            Event::DataStart => {
                self.data_open = positive;
                self.message.clear();
            }
            Event::DataEnd => {
                let accepted = matches!(&decision, Decision::Accept) || positive;
                self.t.messages.push((std::mem::take(&mut self.message), accepted));
                self.data_open = false;
            }
            _ => {}
        }
        self.s.answer(decision);
        self.pump();
        self.check_buffer(false);
    }

    /// The input buffer stays bounded: at most one command line while nothing waits, and about
    /// `MAX_BUFFERED_INPUT` plus one read while a decision is pending.
    fn check_buffer(&mut self, _force: bool) {
        self.checks += 1;
        let (len, pos) = input_buffer(&self.s);
        assert!(pos <= len, "pos {pos} past the buffer end {len}");
        let unparsed = len - pos;
        if self.s.is_closed() {
            assert_eq!(len, 0, "closed session keeps {len} input bytes");
        } else if self.s.is_waiting() {
            assert!(unparsed < server::MAX_BUFFERED_INPUT + MAX_CHUNK, "{unparsed} bytes buffered while waiting");
        } else {
            assert!(unparsed <= MAX_UNWAITING_INPUT, "{unparsed} unparsed bytes while nothing waits");
        }
        assert!(len <= 2 * (server::MAX_BUFFERED_INPUT + MAX_CHUNK) + 4096, "input buffer of {len} bytes");
    }
}

/// The session's input buffer: octets held and the read position within them.
pub fn input_buffer(s: &Session) -> (usize, usize) {
    let len = s.held_input();
    (len, len - s.buffered_input())
}

/// Repeats `stream` as the knobs say, bounded by [`MAX_STREAM`].
pub fn repeated(stream: &[u8], knobs: Knobs) -> Vec<u8> {
    let times = knobs.repeat_count();
    let mut v = Vec::with_capacity((stream.len() * times).min(MAX_STREAM));
    for _ in 0..times {
        if v.len() + stream.len() > MAX_STREAM {
            break;
        }
        v.extend_from_slice(stream);
    }
    v
}

// ---------------------------------------------------------------------------------------------------
// The bdat target's input format

/// One step of the `bdat` target: the stream is built from these, so BDAT framing is always right and
/// the number of replies owed is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BdatOp {
    /// `BDAT <len> [LAST]` and exactly that payload.
    Chunk {
        payload: Vec<u8>,
        last: bool,
    },
    /// `BDAT <n> LAST` with a generated payload of n octets (for the size limit).
    Big {
        n: usize,
        last: bool,
    },
    /// `MAIL FROM` then `RCPT TO`: two commands.
    MailRcpt,
    Rset,
    Noop,
    Ehlo,
}

/// Decodes the ops from the bytes after the header: an op byte, and for a chunk a length byte and the
/// payload (shorter if the input ends).
pub fn parse_bdat_ops(mut b: &[u8]) -> Vec<BdatOp> {
    let mut ops = Vec::new();
    while let Some((&op, rest)) = b.split_first() {
        b = rest;
        ops.push(match op % 8 {
            0 | 1 => {
                let (&len, rest) = b.split_first().unwrap_or((&0, &[]));
                let take = usize::from(len).min(rest.len());
                b = &rest[take..];
                BdatOp::Chunk { payload: rest[..take].to_vec(), last: op % 8 == 1 }
            }
            2 => {
                let (&k, rest) = b.split_first().unwrap_or((&0, &[]));
                b = rest;
                BdatOp::Big { n: usize::from(k) * 97, last: op & 0x80 != 0 }
            }
            3 => BdatOp::MailRcpt,
            4 => BdatOp::Rset,
            5 => BdatOp::Noop,
            6 => BdatOp::Ehlo,
            _ => BdatOp::Chunk { payload: Vec::new(), last: op & 0x80 != 0 },
        });
    }
    ops
}

/// The inverse of [`parse_bdat_ops`] (for writing seeds). Chunk payloads longer than 255 are split.
pub fn encode_bdat_ops(ops: &[BdatOp]) -> Vec<u8> {
    let mut v = Vec::new();
    for op in ops {
        match op {
            BdatOp::Chunk { payload, last } => {
                let parts: Vec<&[u8]> = if payload.is_empty() { vec![&[][..]] } else { payload.chunks(255).collect() };
                let n = parts.len();
                for (i, p) in parts.into_iter().enumerate() {
                    v.push(if *last && i + 1 == n { 1 } else { 0 });
                    v.push(p.len() as u8);
                    v.extend_from_slice(p);
                }
            }
            BdatOp::Big { n, last } => {
                v.push(if *last { 0x82 } else { 2 });
                v.push((n / 97).min(255) as u8);
            }
            BdatOp::MailRcpt => v.push(3),
            BdatOp::Rset => v.push(4),
            BdatOp::Noop => v.push(5),
            BdatOp::Ehlo => v.push(6),
        }
    }
    v
}

/// The payload of [`BdatOp::Big`]: CRLF lines.
pub fn big_payload(n: usize) -> Vec<u8> {
    b"0123456789abcdefghijklmnopqrstuvwxyz\r\n".iter().copied().cycle().take(n).collect()
}

/// The client bytes for the ops, after an opening EHLO/MAIL/RCPT; also the number of commands sent and
/// each BDAT's payload with its LAST flag, in order.
pub fn bdat_stream(ops: &[BdatOp]) -> (Vec<u8>, usize, Vec<(Vec<u8>, bool)>) {
    let mut s = b"EHLO client.fuzz\r\nMAIL FROM:<a@fuzz.example>\r\nRCPT TO:<b@fuzz.example>\r\n".to_vec();
    let mut commands = 3;
    let mut chunks = Vec::new();
    for op in ops {
        match op {
            BdatOp::Chunk { payload, last } => {
                s.extend_from_slice(
                    format!("BDAT {}{}\r\n", payload.len(), if *last { " LAST" } else { "" }).as_bytes(),
                );
                s.extend_from_slice(payload);
                chunks.push((payload.clone(), *last));
                commands += 1;
            }
            BdatOp::Big { n, last } => {
                let payload = big_payload(*n);
                s.extend_from_slice(format!("BDAT {n}{}\r\n", if *last { " LAST" } else { "" }).as_bytes());
                s.extend_from_slice(&payload);
                chunks.push((payload, *last));
                commands += 1;
            }
            BdatOp::MailRcpt => {
                s.extend_from_slice(b"MAIL FROM:<c@fuzz.example>\r\nRCPT TO:<d@fuzz.example>\r\n");
                commands += 2;
            }
            BdatOp::Rset => {
                s.extend_from_slice(b"RSET\r\n");
                commands += 1;
            }
            BdatOp::Noop => {
                s.extend_from_slice(b"NOOP\r\n");
                commands += 1;
            }
            BdatOp::Ehlo => {
                s.extend_from_slice(b"EHLO again.fuzz\r\n");
                commands += 1;
            }
        }
    }
    (s, commands, chunks)
}
