//! passknock keeps an Asterisk PBX closed to the Internet and lets its own people in.
//!
//! - [`config`]: the TOML config — services (named port groups), trusted networks, TTLs.
//! - [`preflight`]: secret files and writable paths, checked alike by `--check` and the start.
//! - [`defaults`]: every default, named once.
//! - [`addr`], [`duration`], [`clock`]: addresses and networks, `2h`-style durations, Unix ms.
//! - [`store`]: the expiry store (SQLite) of grants and bans; durable before a call returns.
//! - [`nft`]: the `inet passknock` table — declared, rendered as nft JSON, applied atomically,
//!   read back and reconciled.
//! - [`disa`], [`limiter`], [`secret`]: the DISA call's policy, brute-force limits, key and passcodes.
//! - [`engine`]: the one writer of store and table; batches requests, ends what expires.
//! - [`audit`]: every audit event, written as a `passknock::audit` line and a [`history`] row;
//!   [`history`] keeps them in the store, batched by a writer of its own, for `log` and `report`.
//! - [`contacts`]: registered contacts learned over AMI, shared with the DISA call flow.
//! - [`ami`]: the AMI listener's policy — contacts, holds for live calls ([`calls`]), bans for
//!   repeated failures ([`offenders`]).
//! - [`control`]: the control-socket protocol; [`daemon`] serves it, within [`control_slots`];
//!   [`cli`] speaks it.
//! - [`logs`]: stderr for the journal or as JSON; the audit file, reopened on reload.
//! - [`daemon_args`]: `passknockd`'s command line, here so its manual page is generated from it.
//! - [`knock`]: the knock listener's wiring — the `knockd` gate fed by NFLOG, grants to the engine.

pub mod addr;
pub mod ami;
pub mod audit;
pub mod calls;
pub mod cli;
pub mod clock;
pub mod config;
pub mod contacts;
pub mod control;
pub mod control_slots;
pub mod daemon;
pub mod daemon_args;
pub mod defaults;
pub mod disa;
pub mod doctor;
pub mod duration;
pub mod engine;
pub mod history;
pub mod knock;
pub mod limiter;
pub mod logs;
pub mod metrics;
pub mod nft;
pub mod notify;
pub mod offenders;
pub mod preflight;
pub mod secret;
pub mod store;
