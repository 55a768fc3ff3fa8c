//! AMI client: registered contacts, active calls, security events.
//!
//! - [`addr`]: the one SIP host parser (bare, `host:port`, `sip:` URIs), shared with `agi`.
//! - [`codec`]: bytes in, greeting and `Key: Value` blocks out; actions out. No IO, caps on line
//!   and block length: the peer is untrusted.
//! - [`event`]: the events passknock uses, typed (`ContactStatus`, the security class, channels);
//!   `RemoteAddress` and contact URIs parsed in both address families.
//! - [`session`]: one logged-in connection with no IO — the re-sync after login, each PJSIP
//!   channel's remote address — turned into [`Update`]s for the daemon.
//! - [`client`]: the socket: login (MD5 challenge or plain), keep-alive, reconnect with backoff,
//!   shutdown as an argument.
//!
//! This crate never touches the store or the firewall: the daemon decides what an update means.

pub mod addr;
pub mod client;
pub mod codec;
pub mod event;
pub mod session;

pub use client::{run, AmiSecret, AmiSettings, LoginMethod, Stats};
pub use codec::DecoderCaps;
pub use session::{Call, Update};
