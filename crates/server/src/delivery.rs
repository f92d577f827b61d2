//! A message on its way into the store: the open message file, the CRLF-to-LF conversion of the body,
//! and the commit that makes it durable in every recipient's mailbox before the 250.

use mailroom_proto::data::ToLf;
use mailroom_proto::{Enhanced, Reply};
use mailroom_store::{Incoming, MailboxId, Store, StoreError};
use tracing::{info, warn};

use crate::trace::{trace_headers, TraceInfo};

/// The largest body chunk converted and handed to the store in one write (the session's chunks are
/// at most the socket read buffer).
const SCRATCH: usize = 64 * 1024;

/// A message being received: the store's open file and the body converter.
pub(crate) struct Receiving {
    incoming: Incoming,
    lf: ToLf,
    scratch: Vec<u8>,
    /// The first write error; the rest of the body is then dropped and the end of data says 451/452.
    failed: Option<StoreError>,
}

impl Receiving {
    /// Opens the message file and writes the trace headers (`Return-Path:`, `Received:`); `trace` holds
    /// everything but the message id, which the store gives.
    pub(crate) fn begin(store: &Store, trace: TraceInfo<'_>) -> Result<Receiving, StoreError> {
        let mut incoming = store.begin()?;
        let headers = trace_headers(&TraceInfo { id: incoming.id(), ..trace });
        incoming.write(headers.as_bytes())?;
        Ok(Receiving { incoming, lf: ToLf::default(), scratch: Vec::with_capacity(SCRATCH), failed: None })
    }

    /// Body bytes as the session hands them over (CRLF line endings, unstuffed).
    pub(crate) fn handle_data(&mut self, chunk: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        self.scratch.clear();
        self.lf.convert(chunk, &mut self.scratch);
        if let Err(e) = self.incoming.write(&self.scratch) {
            self.failed = Some(e);
        }
    }

    /// Makes the message durable in every recipient's mailbox, then says 250; or 451/452 and nothing
    /// stored. Logs one line per stored message (sender, recipients, size): accepted MAIL and RCPT are
    /// logged at debug level only.
    pub(crate) async fn finish(mut self, rcpts: &[MailboxId], from: &str) -> Reply {
        if self.failed.is_none() {
            self.scratch.clear();
            self.lf.finish(&mut self.scratch);
            if !self.scratch.is_empty() {
                if let Err(e) = self.incoming.write(&self.scratch) {
                    self.failed = Some(e);
                }
            }
        }
        if let Some(e) = self.failed {
            warn!(error = %e, "message write failed");
            return storage_failure(&e);
        }
        match self.incoming.commit(rcpts).await {
            Ok(d) => {
                let to: Vec<String> = rcpts.iter().map(|m| m.address()).collect();
                info!(id = %d.id, from, to = %to.join(","), size = d.size, "message stored");
                Reply::new(250, Enhanced(2, 0, 0), format!("Ok: stored as {}", d.id))
            }
            Err(e) => {
                warn!(error = %e, "message commit failed");
                storage_failure(&e)
            }
        }
    }
}

/// 452 4.3.1 when the disk is full (RFC 3463: mail system full), else 451 4.3.0.
pub(crate) fn storage_failure(e: &StoreError) -> Reply {
    if e.is_no_space() {
        Reply::new(452, Enhanced(4, 3, 1), "Insufficient system storage, try again later")
    } else {
        Reply::new(451, Enhanced(4, 3, 0), "Local error in processing, try again later")
    }
}
