//! What happened, counted: `passknock report` and the counts in `passknock status`.

use serde::{Deserialize, Serialize};

use crate::base::clock::UnixMs;
use crate::model::{Event, Kind};

/// What happened in a window up to `Status::now`, counted from the history in the store, so a
/// restart loses none of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    pub grants: GrantsBySource,
    pub bans: u64,
    pub failed_passcodes: u64,
    pub knocks_accepted: u64,
    pub knocks_refused: u64,
    /// Calls that reached the DISA passcode prompt.
    pub disa_calls: u64,
    /// SIP calls AMI reported starting.
    pub sip_calls: u64,
    /// DISA grants to the address the phone was trying to register from; grants replaced by
    /// their holder's new address; grants extended in place.
    pub attempted_grants: u64,
    pub grants_replaced: u64,
    pub grants_extended: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GrantsBySource {
    pub disa: u64,
    pub knock: u64,
    pub admin: u64,
    pub ami: u64,
}

impl GrantsBySource {
    pub fn total(&self) -> u64 {
        self.disa + self.knock + self.admin + self.ami
    }
}

/// A name (an address, a who) and how many events it had.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    pub name: String,
    pub count: u64,
}

/// `passknock report`: what happened from `since` to `now`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub since: UnixMs,
    pub now: UnixMs,
    /// Events of each kind.
    pub totals: Vec<(Kind, u64)>,
    /// Addresses with the most refused knocks, passcodes and grants.
    pub top_refused: Vec<Counted>,
    /// Grants by who asked: `disa:ann`, `knock:laptop`, `uid 0`.
    pub grants_by_who: Vec<Counted>,
    /// The newest bans, lockouts and suspensions (at most `REPORT_ROWS` each; `totals` has all).
    pub bans: Vec<Event>,
    pub lockouts: Vec<Event>,
    pub suspensions: Vec<Event>,
}

impl Report {
    pub fn total(&self, kinds: &[Kind]) -> u64 {
        self.totals
            .iter()
            .filter(|(k, _)| kinds.contains(k))
            .map(|(_, n)| n)
            .sum()
    }
}
