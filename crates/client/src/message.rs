//! The message handed to [`crate::Client::send`]: bytes in memory, or a reader that streams.

use tokio::io::AsyncRead;

use mailroom_proto::client::MessageInfo;

pub(crate) enum Source<'a> {
    Bytes(&'a [u8]),
    Reader(Box<dyn AsyncRead + Unpin + Send + 'a>),
}

/// A message in RFC 5322 form. Line ends may be LF, CR or CRLF: they leave as CRLF.
pub struct Message<'a> {
    pub(crate) source: Source<'a>,
    pub(crate) info: MessageInfo,
}

impl<'a> Message<'a> {
    /// A message held in memory; its size and 8-bit content are known up front.
    pub fn from_bytes(bytes: &'a [u8]) -> Message<'a> {
        Message { source: Source::Bytes(bytes), info: MessageInfo::scan(bytes) }
    }

    /// A message read as it is sent. Without [`Message::size`] no SIZE= is declared; without
    /// [`Message::eight_bit`] BODY=8BITMIME is declared whenever the server offers it.
    pub fn from_reader(reader: impl AsyncRead + Unpin + Send + 'a) -> Message<'a> {
        Message { source: Source::Reader(Box::new(reader)), info: MessageInfo::unknown(None) }
    }

    /// Declares the size in octets (counting line ends as CRLF, RFC 1870 §3).
    pub fn size(mut self, size: u64) -> Message<'a> {
        self.info.size = Some(size);
        self
    }

    /// Declares whether the message holds octets above 127.
    pub fn eight_bit(mut self, eight_bit: bool) -> Message<'a> {
        self.info.eight_bit = Some(eight_bit);
        self
    }

    /// Declares that the header holds raw UTF-8 (RFC 6532).
    pub fn utf8_headers(mut self, yes: bool) -> Message<'a> {
        self.info.utf8_headers = yes;
        self
    }

    pub fn info(&self) -> &MessageInfo {
        &self.info
    }
}

impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.source {
            Source::Bytes(b) => format!("{} bytes", b.len()),
            Source::Reader(_) => "reader".into(),
        };
        f.debug_struct("Message").field("source", &kind).field("info", &self.info).finish()
    }
}
