//! The control protocol between `passknock` and `passknockd`: one JSON object per line each way.
//!
//! # Format
//!
//! Request: `{"op":"grant","address":"203.0.113.7","services":["sip"],"ttl":"2h","note":"…"}`;
//! `revoke`/`unban` take `address`; `ban` takes `address`, `ttl`, `reason`; `list` may take
//! `limit` (rows of each list, those ending first); `status`, `contacts` and `calls` take nothing;
//! `account-*` manage DISA accounts. `hold` and `release` are the daemon's own (the AMI
//! listener's), never read from the socket. The reply is one object tagged by `reply`; failures are
//! `{"reply":"error","message":"…"}` and change nothing.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::duration::Ttl;
use crate::secret::ShownOnce;
use crate::store::{Account, Ban, Grant, UnixMs};

/// What `account add` asks for; the daemon fills in the defaults and draws the passcode.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAccount {
    pub name: String,
    #[serde(default)]
    pub services: Vec<String>,
    pub ttl: Option<Ttl>,
    pub endpoint: Option<String>,
    #[serde(default)]
    pub address_modes: Vec<String>,
    /// Numbers the owner calls from, let through while passcode entry is suspended.
    #[serde(default)]
    pub callers: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Grant {
        address: String,
        #[serde(default)]
        services: Vec<String>,
        ttl: Option<Ttl>,
        #[serde(default)]
        note: String,
    },
    Revoke {
        address: String,
    },
    /// Live grants and bans, those ending first first; `limit` caps each list.
    List {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    Ban {
        address: String,
        ttl: Option<Ttl>,
        #[serde(default)]
        reason: String,
    },
    Unban {
        address: String,
    },
    Status,
    /// Registered contacts as AMI reports them; answered by the daemon, not the engine.
    Contacts,
    /// Live PJSIP calls as AMI reports them; answered by the daemon, not the engine.
    Calls,
    /// Internal: a call is up from `address`; keep its grants open until at least `until` (capped
    /// at `ami.hold-max` past each grant's expiry).
    #[serde(skip)]
    Hold {
        address: IpAddr,
        until: UnixMs,
    },
    /// Internal: `address`'s calls ended; its grants end at their own expiry again.
    #[serde(skip)]
    Release {
        address: IpAddr,
    },
    /// Re-read the config file (as SIGHUP does). A bad config is refused and the running one kept.
    Reload,
    /// A DISA account with a new passcode, shown once in the reply.
    AccountAdd(NewAccount),
    AccountList,
    /// Replaces an account's owner numbers (none: the account has no escape hatch).
    AccountCallers {
        name: String,
        #[serde(default)]
        callers: Vec<String>,
    },
    AccountResetPasscode {
        name: String,
    },
    AccountDisable {
        name: String,
    },
    AccountEnable {
        name: String,
    },
    AccountRemove {
        name: String,
    },
}

/// Whether the firewall took a change. The store already has it; when nft refused, the daemon
/// retries and `error` says what nft said.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Reply {
    Granted {
        grant: Grant,
        firewall: Applied,
        warning: Option<String>,
    },
    Revoked {
        address: IpAddr,
        grants: usize,
        firewall: Applied,
    },
    Banned {
        ban: Ban,
        firewall: Applied,
    },
    Unbanned {
        address: IpAddr,
        firewall: Applied,
    },
    Listing {
        now: UnixMs,
        grants: Vec<Grant>,
        bans: Vec<Ban>,
    },
    Status(Box<Status>),
    /// Reply to `hold`/`release`: how many grants the address has, and when access now ends.
    Held {
        address: IpAddr,
        grants: usize,
        end: Option<UnixMs>,
        firewall: Applied,
    },
    Contacts {
        ami: AmiStatus,
        contacts: Vec<ContactEntry>,
    },
    Calls {
        ami: AmiStatus,
        calls: Vec<CallEntry>,
    },
    /// The new passcode is in this reply and nowhere else.
    AccountCreated {
        account: Account,
        passcode: ShownOnce,
    },
    Accounts {
        accounts: Vec<Account>,
    },
    Done {
        message: String,
    },
    Error {
        message: String,
    },
}

impl Reply {
    pub fn error(message: impl Into<String>) -> Reply {
        Reply::Error {
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub table: String,
    pub table_present: bool,
    pub in_sync: bool,
    /// What differs, when not in sync.
    pub sync_detail: String,
    pub grants: u64,
    pub bans: u64,
    pub elements: usize,
    pub services: Vec<String>,
    pub store: PathBuf,
    pub last_reconcile: Option<UnixMs>,
    pub firewall_error: Option<String>,
    pub now: UnixMs,
    /// Absent from an older daemon's reply: zeros then.
    #[serde(default)]
    pub last_hour: LastHour,
}

/// What happened in the hour up to `Status::now` (this minute and the 59 before it), counted in
/// the daemon's memory since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LastHour {
    pub grants: GrantsBySource,
    pub bans: u64,
    pub failed_passcodes: u64,
    pub knocks_accepted: u64,
    pub knocks_refused: u64,
    /// Calls that reached the DISA passcode prompt.
    pub disa_calls: u64,
    /// SIP calls AMI reported starting.
    pub sip_calls: u64,
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

/// The AMI listener's state, for `passknock contacts` and `passknock calls`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmiStatus {
    pub enabled: bool,
    pub address: String,
    pub connected: bool,
    /// Logins since the daemon started (each is followed by a full re-sync).
    pub logins: u64,
    pub events: u64,
    /// Blocks dropped for their size or for garbage.
    pub skipped: u64,
    /// Bans the listener asked for.
    pub bans: u64,
    /// From receiving the security event that crossed the threshold to nft holding the ban.
    pub last_ban_us: Option<u64>,
    pub last_error: Option<String>,
}

/// An endpoint and the addresses it is registered from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactEntry {
    pub endpoint: String,
    pub addresses: Vec<IpAddr>,
}

/// A live PJSIP call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallEntry {
    pub channel: String,
    pub address: IpAddr,
    pub since: UnixMs,
}
