//! A DISA account as stored and listed: never the passcode, only when it was set and how long.

use serde::{Deserialize, Serialize};

use crate::base::clock::UnixMs;

/// A DISA account. The passcode itself is never stored: only its tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub name: String,
    pub services: Vec<String>,
    pub ttl_secs: u64,
    pub endpoint: Option<String>,
    /// `source`, `registered`, `keyed`, in the order tried.
    pub address_modes: Vec<String>,
    pub disabled: bool,
    pub created: UnixMs,
    /// When the passcode was last set.
    pub passcode_set: UnixMs,
    /// Numbers the owner calls from (digits only): still let through while passcode entry is
    /// suspended for everyone else.
    #[serde(default)]
    pub callers: Vec<String>,
    /// The passcode's length; `None` for an account made before lengths were kept.
    #[serde(default)]
    pub passcode_digits: Option<usize>,
    /// A call from a new address adds a grant beside the account's others instead of replacing
    /// them (a desk phone and a softphone, say).
    #[serde(default)]
    pub keep_several: bool,
}
