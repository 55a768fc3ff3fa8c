//! The engine's commands: one per operation, each carrying parsed values and answered with a
//! result of its own type. The control socket's wire format is converted to these once, in the
//! daemon; nothing here knows JSON.

use std::net::IpAddr;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::base::clock::UnixMs;
use crate::base::duration::Ttl;
use crate::base::secret::ShownOnce;
use crate::config::Config;
use crate::model::{Account, Ban, ClusterView, Grant, NameState, Source, StandingEntry};
use crate::nft::Reconciled;

/// Who asked, for the audit log (`uid 0` over the control socket, `disa:alice` from a call,
/// `knock:laptop`), and through which door.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub who: String,
    pub source: Source,
}

impl Actor {
    pub fn new(who: impl Into<String>, source: Source) -> Actor {
        Actor {
            who: who.into(),
            source,
        }
    }
}

/// Why the engine said no. Nothing changed; the message is what the asker is told.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl Refused {
    pub fn new(message: impl Into<String>) -> Refused {
        Refused(message.into())
    }
}

/// Whether the table took a change the store already has. When nft refused, the engine retries
/// and `error` says what nft said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableChange {
    pub error: Option<String>,
}

/// The services a grant asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Services {
    /// The config's `grants.default-services` (all services when it names none).
    Default,
    /// These names, trimmed, each once. Whether the config defines them is the engine's call: a
    /// reload can change that between the asking and the granting.
    Named(Vec<String>),
}

impl Services {
    /// From names as a caller gave them; none means the defaults.
    pub fn from_names(names: &[String]) -> Services {
        if names.is_empty() {
            return Services::Default;
        }
        let mut out: Vec<String> = Vec::new();
        for n in names {
            let n = n.trim().to_string();
            if !out.contains(&n) {
                out.push(n);
            }
        }
        Services::Named(out)
    }
}

/// Access for `address` to `services` for `ttl` (the config's default without one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantAsk {
    pub address: IpAddr,
    pub services: Services,
    pub ttl: Option<Ttl>,
    pub note: String,
    /// Whose access this is, when it is one account's or one knock profile's; `None` for an
    /// admin's grant, which never replaces or extends another.
    pub owner: Option<Owner>,
}

/// The one person or device a grant is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Holder {
    /// A DISA account, by name.
    Account(String),
    /// A knock profile, by name.
    Profile(String),
    /// A PJSIP endpoint whose successful login (`[sip-auth-grant]`) earned the grant, by name.
    Endpoint(String),
}

impl Holder {
    /// As grants record it: `disa:alice`, `knock:laptop`, `sip-auth:701`.
    pub fn who(&self) -> String {
        match self {
            Holder::Account(name) => format!("disa:{name}"),
            Holder::Profile(name) => format!("knock:{name}"),
            Holder::Endpoint(name) => format!("sip-auth:{name}"),
        }
    }

    /// The door its grants come through.
    pub fn source(&self) -> Source {
        match self {
            Holder::Account(_) => Source::Disa,
            Holder::Profile(_) => Source::Knock,
            Holder::Endpoint(_) => Source::Ami,
        }
    }
}

/// A grant's holder and what a grant from a new address does to the holder's others. From the
/// same address it always extends the grant there in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub holder: Holder,
    /// A grant from a new address ends the holder's grants at every other address (the road
    /// warrior moved); false keeps them side by side.
    pub replace: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Granted {
    pub grant: Grant,
    pub firewall: TableChange,
    /// Said when the address is banned: the ban wins until it ends.
    pub warning: Option<String>,
}

/// The answer to a grant a successful SIP login earned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthGranted {
    /// Granted, or extended in place.
    Granted(Granted),
    /// The holder's grant at the address has more than half its TTL left: nothing written.
    Fresh(Grant),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    pub address: IpAddr,
    pub grants: usize,
    pub firewall: TableChange,
}

/// `address` kept off every protected port for `ttl` (the config's default without one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanAsk {
    pub address: IpAddr,
    pub ttl: Option<Ttl>,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Banned {
    pub ban: Ban,
    pub firewall: TableChange,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unbanned {
    pub address: IpAddr,
    pub firewall: TableChange,
}

/// After a hold or a release: how many live grants the address has, and when its access ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub address: IpAddr,
    pub grants: usize,
    pub end: Option<UnixMs>,
    pub firewall: TableChange,
}

/// Live grants and bans, those ending first first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    pub now: UnixMs,
    pub grants: Vec<Grant>,
    pub bans: Vec<Ban>,
}

/// The table and the store as the engine sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableStatus {
    /// `inet passknock`.
    pub table: String,
    pub table_present: bool,
    pub in_sync: bool,
    /// What differs, when not in sync.
    pub sync_detail: String,
    pub grants: u64,
    pub bans: u64,
    pub elements: usize,
    pub services: Vec<String>,
    pub store: std::path::PathBuf,
    pub last_reconcile: Option<UnixMs>,
    pub firewall_error: Option<String>,
    /// How element changes reach the kernel: netlink, or nft and why.
    pub firewall_path: String,
    pub now: UnixMs,
    /// Standing entries, and the names they hold.
    pub standing: u64,
    pub names: Vec<NameState>,
    /// What the SIP doors do (`None`: both off), and what responsive SIP dropped over its rate.
    pub sip_door: Option<String>,
    pub sip_rate_drops: Option<u64>,
    /// The shared store and its nodes; `None` with a store of this node's own.
    pub cluster: Option<ClusterView>,
}

/// What a reload's table rebuild came to: the store is unchanged either way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reloaded {
    pub table: Result<Reconciled, String>,
}

/// A DISA account to add; the engine fills in the defaults and draws the passcode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountAsk {
    pub name: String,
    pub services: Vec<String>,
    pub ttl: Option<Ttl>,
    pub endpoint: Option<String>,
    pub address_modes: Vec<String>,
    pub callers: Vec<String>,
    /// A call from a new address adds a grant instead of replacing the account's others.
    pub keep_several: bool,
}

/// An account and its new passcode, shown once.
#[derive(Debug, PartialEq, Eq)]
pub struct AccountCreated {
    pub account: Account,
    pub passcode: ShownOnce,
}

/// A standing entry to add: names, networks and DNS names as the admin wrote them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StandingAsk {
    pub name: String,
    pub targets: Vec<String>,
    /// None: the config's default services.
    pub services: Vec<String>,
    pub note: String,
}

/// A standing entry added or removed, and whether the table took it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StandingChanged {
    pub entry: StandingEntry,
    pub firewall: TableChange,
}

/// Every standing entry and the state of every name followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StandingListing {
    pub now: UnixMs,
    pub entries: Vec<StandingEntry>,
    pub names: Vec<NameState>,
    /// Every DNS name to resolve: the entries' and `firewall.trusted`'s.
    pub followed: Vec<String>,
}

/// One name's answer from the resolver: its addresses, or why it did not resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub name: String,
    pub result: Result<Vec<IpAddr>, String>,
}

/// Where one command's result goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, Refused>>;

/// One engine operation and where its answer goes.
pub(crate) enum Command {
    Grant(GrantAsk, Reply<Granted>),
    /// An owned grant that, replacing, spares the holder's grant at the other address: one
    /// dual-stack knock opens its IPv4 and its IPv6 address, and neither replaces the other.
    GrantBeside(GrantAsk, IpAddr, Reply<Granted>),
    /// A grant a successful SIP login earned: refused while the address is banned, a no-op
    /// while the holder's grant there is fresh, otherwise a grant batched with the others.
    GrantOnAuth(GrantAsk, Reply<AuthGranted>),
    Revoke(IpAddr, Reply<Revoked>),
    Ban(BanAsk, Reply<Banned>),
    Unban(IpAddr, Reply<Unbanned>),
    /// A call is up from the address: keep its grants open until at least `until`, capped at
    /// `ami.hold-max` past each grant's expiry.
    Hold(IpAddr, UnixMs, Reply<Held>),
    /// The address's calls ended: its grants end at their own expiry again.
    Release(IpAddr, Reply<Held>),
    List(Option<usize>, Reply<Listing>),
    Status(Reply<TableStatus>),
    /// A config the daemon has loaded and checked: services, trusted networks, caps and limits.
    Reload(Box<Config>, Reply<Reloaded>),
    AccountAdd(AccountAsk, Reply<AccountCreated>),
    AccountList(Reply<Vec<Account>>),
    AccountCallers(String, Vec<String>, Reply<Vec<String>>),
    AccountResetPasscode(String, Reply<AccountCreated>),
    AccountSetDisabled(String, bool, Reply<()>),
    AccountRemove(String, Reply<()>),
    StandingAdd(StandingAsk, Reply<StandingChanged>),
    StandingList(Reply<StandingListing>),
    StandingRemove(String, Reply<StandingChanged>),
    /// The resolver's answers for the names it was asked to follow.
    Resolved(Vec<Answer>, Reply<()>),
    /// Another node changed these addresses in the shared store; `None`: anything may have
    /// changed (accounts, standing entries, or this node was away). No answer.
    Remote(Option<Vec<IpAddr>>),
}

/// One command, who asked for it, through which door, and when it reached the daemon.
pub(crate) struct Job {
    pub actor: Actor,
    pub command: Command,
    pub arrived: Instant,
}
