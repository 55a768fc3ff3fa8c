//! The records every layer speaks of — grants, bans, accounts, reports — with no behaviour
//! beyond what each one means.

mod account;
mod cluster;
mod event;
mod grant;
mod report;
mod standing;

pub use account::Account;
pub use cluster::ClusterView;
pub use event::{Event, Kind, KINDS};
pub use grant::{Ban, Grant, NewGrant, Source};
pub use report::{Counted, Counts, GrantsBySource, Report};
pub use standing::{check_fqdn, NameState, StandingEntry, Target};
