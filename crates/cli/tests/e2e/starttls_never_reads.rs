//! Regression (found in review): the 220 to STARTTLS (and every pipelined reply queued before it) is written by
//! `Event::StartTls` in crates/server/src/connection.rs with a bare `stream.write_all(..).await`:
//! no `command_timeout`, no shutdown phase. A client that pipelines commands ending in STARTTLS and
//! never reads holds its session (and its connection slot) forever, unlike the same client without
//! STARTTLS, which loses its slot after `command_timeout` (exhaustion.rs
//! `client_never_reads_replies_loses_its_slot`).

use std::time::Duration;

use crate::common::*;

#[test]
fn pipelined_starttls_to_a_client_that_never_reads_loses_its_slot() {
    let config = "[limits]\ncommand_timeout = \"1s\"\nmax_connections = 1\nerror_delay = \"10ms\"\n";
    let server = Server::start_with_users(Opts::example().with_config(config), &["alice@example.test"]);
    let mut c = connect_small_rcvbuf(server.port);
    assert_eq!(c.read_reply().code, 220);
    c.ehlo();
    // Grow the server's read buffer to 64 KiB (it grows when a read fills the initial 2 KiB), and read
    // those replies, so the socket buffers start empty.
    let noops = b"NOOP\r\n".repeat(700);
    c.send(&noops);
    for _ in 0..700 {
        assert_eq!(c.read_reply().code, 250);
    }
    // HELP is answered by 124 octets. On loopback the server's socket send buffer holds about 2.8 MB
    // for a client that does not read (measured with `ss`): fill it to ~1.9 MB with replies written by
    // the main loop (which has a timeout), then send ~60 KB of HELP ending in STARTTLS: its ~1.24 MB of
    // replies leave from the `Event::StartTls` arm, whose write has no timeout, and block there.
    for n in [10_000, 5_000] {
        c.send(&b"HELP\r\n".repeat(n));
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut batch = b"HELP\r\n".repeat(10_000);
    batch.extend_from_slice(b"STARTTLS\r\n");
    c.send(&batch);
    // command_timeout is 1 s: by now the server must have given up on us and freed the only slot.
    std::thread::sleep(Duration::from_secs(4));
    let mut next = Smtp::try_connect(server.port).expect("connect");
    let g = next.read_reply();
    assert_eq!(
        g.code,
        220,
        "the non-reading STARTTLS client still holds the only connection slot: {g:?}\n{}",
        server.log_text()
    );
    drop(c);
}

/// A client whose receive buffer is small (set before connect, so the advertised window stays small and
/// the buffered amount is dominated by the server's send buffer, ~2.8 MB here; the batch sizes above
/// assume a buffer between ~1.9 MB and ~3.1 MB).
fn connect_small_rcvbuf(port: u16) -> Smtp {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let s = rt
        .block_on(async {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.set_recv_buffer_size(4096)?;
            let s = sock.connect(([127, 0, 0, 1], port).into()).await?;
            s.into_std()
        })
        .unwrap();
    s.set_nonblocking(false).unwrap();
    Smtp::from_stream(s).unwrap()
}
