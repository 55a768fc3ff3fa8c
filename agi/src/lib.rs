//! FastAGI protocol: sans-IO codec, TCP server, and the DISA call flow.
//!
//! - [`codec`]: bytes in, typed events out (the `agi_*` environment, replies, `HANGUP`); commands
//!   out with Asterisk's quoting. No IO, caps on every length: the peer is untrusted.
//! - [`session`]: one FastAGI connection driven by the codec, with a deadline.
//! - [`server`]: the listener — connection cap, per-session deadline, shutdown as an argument.
//! - [`disa`]: the DISA call flow over a session, generic over the daemon's policy backend.

pub mod codec;
pub mod disa;
pub mod server;
pub mod session;
