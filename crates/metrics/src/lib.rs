//! mailroom-metrics: every Prometheus metric of mailroom, named once.
//!
//! The server, the relay (and later the web crate) record through the `metrics` facade; this crate is
//! the one place that spells a metric's name, its HELP text, its type and its label values, so that no
//! two crates can disagree about them and the label sets stay bounded (every label value is a variant
//! of a fixed enum, never text from the network). It depends on no other mailroom crate, so any crate
//! may record without an arrow pointing upwards.
//!
//! - [`names`]: the family names and HELP texts, and the label sets ([`Listener`], [`RefusalReason`], ...).
//! - [`record`]: the functions the hot paths call ([`record::session_opened`],
//!   [`record::message_received`], ...). Each is an atomic add on a handle registered once at
//!   [`install`]: no allocation, no lookup, no lock per increment. Before `install` (a library used
//!   without `mailroom serve`, unit tests) they do nothing.
//! - [`install`] / [`render`]: the Prometheus recorder (metrics-exporter-prometheus, without its HTTP
//!   listener), installed once per process by `mailroom serve`; `render` is the text exposition format
//!   (version 0.0.4) that `/metrics` serves.
#![forbid(unsafe_code)]

pub mod names;
pub mod record;

mod handles;
mod install;

pub use install::{install, is_installed, render, Handle, CONTENT_TYPE};
pub use names::{AuthMethod, AuthResult, DeliveryResult, Listener, QueueState, RefusalReason, ReplyClass, TlsVersion};
