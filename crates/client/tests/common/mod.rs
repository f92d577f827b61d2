//! A scripted SMTP server on 127.0.0.1 for the client's tests: each test writes the server's side as a
//! small async function over the accepted connection.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The longest any scripted server lives, so that no test can hang on it.
pub const SERVER_LIFETIME: Duration = Duration::from_secs(30);

pub struct Conn {
    pub r: BufReader<OwnedReadHalf>,
    pub w: OwnedWriteHalf,
}

impl Conn {
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.w.write_all(bytes).await;
    }

    /// One line with its CRLF, or "" at end of stream.
    pub async fn line(&mut self) -> String {
        let mut buf = Vec::new();
        let _ = self.r.read_until(b'\n', &mut buf).await;
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Reads a line and checks that it starts with `prefix` (case-insensitively).
    pub async fn expect(&mut self, prefix: &str) -> String {
        let l = self.line().await;
        assert!(l.to_ascii_uppercase().starts_with(&prefix.to_ascii_uppercase()), "wanted {prefix:?}, got {l:?}");
        l
    }

    /// Reads the message up to the lone dot, returning it as sent (still dot-stuffed, CRLF).
    pub async fn data(&mut self) -> Vec<u8> {
        let mut msg = Vec::new();
        loop {
            let mut line = Vec::new();
            if self.r.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                return msg;
            }
            if line == b".\r\n" {
                return msg;
            }
            msg.extend_from_slice(&line);
        }
    }

    /// Waits until the client closes (or the lifetime ends).
    pub async fn drain(&mut self) {
        let mut sink = [0u8; 1024];
        while let Ok(n) = self.r.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    }
}

/// Serves one connection with `script`; returns the address and the script's result.
pub async fn serve<F, Fut, T>(script: F) -> (SocketAddr, JoinHandle<Option<T>>)
where
    F: FnOnce(Conn) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send,
    T: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let (sock, _) = tokio::time::timeout(SERVER_LIFETIME, listener.accept()).await.ok()?.ok()?;
        let (r, w) = sock.into_split();
        tokio::time::timeout(SERVER_LIFETIME, script(Conn { r: BufReader::new(r), w })).await.ok()
    });
    (addr, handle)
}

/// Greeting and an EHLO reply offering `caps` (one per line).
pub async fn hello(c: &mut Conn, caps: &[&str]) {
    c.send(b"220 test.example ESMTP\r\n").await;
    c.expect("EHLO ").await;
    let mut reply = String::from("250");
    reply.push(if caps.is_empty() { ' ' } else { '-' });
    reply.push_str("test.example\r\n");
    for (i, cap) in caps.iter().enumerate() {
        reply.push_str(if i + 1 == caps.len() { "250 " } else { "250-" });
        reply.push_str(cap);
        reply.push_str("\r\n");
    }
    c.send(reply.as_bytes()).await;
}
