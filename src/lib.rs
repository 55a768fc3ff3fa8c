//! passknock keeps an Asterisk PBX closed to the Internet and lets its own people in.
//!
//! The modules are layers; each uses only those listed before it (`tests/layers.rs` checks):
//!
//! - [`base`]: addresses, durations, clocks, defaults, secrets — values and their parsing.
//! - [`model`]: the records every layer speaks of: grants, bans, accounts, audit events, reports.
//! - [`config`]: the TOML config — services (named port groups), trusted networks, TTLs, limits.
//! - [`observe`]: recording what happens — audit lines and rows, Prometheus counters.
//! - [`control`]: the control socket's wire format and its client.
//! - [`rules`]: pure policy state, time passed in: DISA guessing limits, AMI offenders, live
//!   calls, registered contacts.
//! - [`store`]: the expiry store (SQLite) behind its interface; the history writer.
//! - [`nft`]: the `inet passknock` table — the desired state as a value, rendered, applied
//!   atomically, read back and reconciled.
//! - [`engine`]: the one writer of store and table, its typed commands and its handle.
//! - [`daemon`]: `passknockd`'s adapters around the engine — control socket, reload, DISA calls,
//!   knocks, AMI, metrics, systemd notify, logs.
//! - [`cli`]: `passknock`, the admin and knock CLI, with `doctor`.

pub mod base;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod engine;
pub mod model;
pub mod nft;
pub mod observe;
pub mod rules;
pub mod store;
