//! The client side of SMTP as a sans-I/O state machine (RFC 5321 §3, §4; RFC 2920 pipelining).
//!
//! [`Session`] owns everything between the first byte of the greeting and the reply to QUIT: it writes
//! commands, matches replies to them in order, falls back from EHLO to HELO, reads the capabilities, runs
//! mail transactions (pipelined when the server offers it), STARTTLS and AUTH ([`auth`]), and turns the message into its DATA form. It does
//! no I/O and knows no clock: the caller feeds it the bytes it read with [`Session::handle_input`], writes
//! what [`Session::poll_transmit`] gives, and reacts to [`Session::poll_event`]. Timeouts belong to the
//! caller, which knows how long it has been waiting for the reply to which command.
//!
//! Two ways to use it: [`Session::begin_mail`] runs a whole transaction and ends in [`Event::Done`] with
//! what each recipient got; or the step-by-step commands ([`Session::mail`], [`Session::rcpt`],
//! [`Session::data`], ...) whose replies come back one by one as [`Event::Reply`], for a guided session.

pub mod auth;
mod capabilities;
mod data;
mod envelope;
mod error;
pub mod reply;
mod session;
mod step;

pub use crate::sasl::{Mechanism, Secret};
pub use capabilities::Capabilities;
pub use data::{encode_data, DataEncoder};
pub use envelope::{Envelope, MessageInfo};
pub use error::Error;
pub use reply::{parse_reply, ReplyError, ReplyParser, MAX_REPLY_LINE, MAX_REPLY_LINES};
pub use session::{Event, Outcome, RecipientOutcome, Session};
pub use step::Step;
