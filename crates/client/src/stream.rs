//! The connection under the session: plain TCP today; STARTTLS and implicit TLS (RFC 8314) add variants
//! here, and nothing above this file needs to know which one it talks through.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tls {
    /// Plain text, as swaks and msmtp default to.
    #[default]
    None,
    /// Plain text, then STARTTLS (RFC 3207) before anything else.
    StartTls,
    /// TLS from the first byte (RFC 8314 §3.3, port 465).
    Implicit,
}

#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
}

impl Stream {
    pub(crate) async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
        }
    }

    pub(crate) async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
        }
    }

    pub(crate) async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.shutdown().await,
        }
    }
}
