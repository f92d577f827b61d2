//! RFC 2920 over a real socket: with PIPELINING, MAIL, the RCPTs and DATA leave in one write; without it,
//! one command at a time, each after the reply to the one before.

mod common;

use std::time::Duration;

use common::{hello, serve};
use mailroom_client::{Client, Envelope, Message};
use mailroom_proto::{Address, ForwardPath, ReversePath};
use tokio::io::AsyncReadExt;

fn envelope(n: usize) -> Envelope {
    let from = ReversePath::Mailbox(Address::parse("a@x.example").unwrap());
    let to = (0..n).map(|i| ForwardPath::Mailbox(Address::parse(&format!("r{i}@y.example")).unwrap())).collect();
    Envelope::new(from, to)
}

#[tokio::test]
async fn pipelined_group_arrives_in_one_piece() {
    let (addr, server) = serve(|mut c| async move {
        hello(&mut c, &["PIPELINING", "SIZE 100000"]).await;
        // Nothing is answered until DATA is in: a client that waited for each reply would hang here.
        let mut got = Vec::new();
        let mut first_read = None;
        while !got.ends_with(b"DATA\r\n") {
            let mut buf = [0u8; 4096];
            let n = c.r.read(&mut buf).await.unwrap();
            assert!(n > 0, "client closed");
            first_read.get_or_insert(n);
            got.extend_from_slice(&buf[..n]);
        }
        c.send(b"250 ok\r\n250 ok\r\n550 5.1.1 no\r\n250 ok\r\n354 go\r\n").await;
        let msg = c.data().await;
        c.send(b"250 2.0.0 queued\r\n").await;
        c.expect("QUIT").await;
        c.send(b"221 bye\r\n").await;
        (String::from_utf8(got).unwrap(), first_read.unwrap(), msg)
    })
    .await;
    let mut client = Client::builder(addr.to_string()).timeout(Duration::from_secs(5)).connect().await.unwrap();
    let outcome = client.send(&envelope(3), Message::from_bytes(b"Subject: x\n\nbody\n")).await.unwrap();
    client.quit().await.unwrap();
    let (group, first_read, msg) = server.await.unwrap().expect("server finished");
    assert_eq!(
        group,
        "MAIL FROM:<a@x.example> SIZE=20\r\nRCPT TO:<r0@y.example>\r\nRCPT TO:<r1@y.example>\r\nRCPT TO:<r2@y.example>\r\nDATA\r\n"
    );
    assert_eq!(first_read, group.len(), "the whole group came in the first read");
    assert_eq!(msg, b"Subject: x\r\n\r\nbody\r\n");
    let refused: Vec<_> = outcome.refused().map(|r| r.recipient.to_string()).collect();
    assert_eq!(refused, vec!["<r1@y.example>"]);
    assert_eq!(outcome.accepted().count(), 2);
}

#[tokio::test]
async fn without_pipelining_commands_wait_for_replies() {
    let (addr, server) = serve(|mut c| async move {
        hello(&mut c, &["SIZE 100000"]).await;
        let mut lines = Vec::new();
        for reply in ["250 ok", "250 ok", "250 ok", "354 go"] {
            let l = c.line().await;
            // Before we answer, nothing else may arrive.
            let mut peek = [0u8; 64];
            let early = tokio::time::timeout(Duration::from_millis(150), c.r.read(&mut peek)).await;
            assert!(early.is_err(), "client sent {:?} before the reply to {l:?}", String::from_utf8_lossy(&peek));
            lines.push(l);
            c.send(format!("{reply}\r\n").as_bytes()).await;
        }
        let _ = c.data().await;
        c.send(b"250 queued\r\n").await;
        c.expect("QUIT").await;
        c.send(b"221 bye\r\n").await;
        lines
    })
    .await;
    let mut client = Client::builder(addr.to_string()).timeout(Duration::from_secs(5)).connect().await.unwrap();
    let outcome = client.send(&envelope(2), Message::from_bytes(b"Subject: x\n\nbody\n")).await.unwrap();
    assert!(outcome.is_complete());
    client.quit().await.unwrap();
    let lines = server.await.unwrap().expect("server finished");
    assert_eq!(
        lines,
        vec![
            "MAIL FROM:<a@x.example> SIZE=20\r\n",
            "RCPT TO:<r0@y.example>\r\n",
            "RCPT TO:<r1@y.example>\r\n",
            "DATA\r\n"
        ]
    );
}
