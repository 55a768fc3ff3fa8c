//! The control protocol between `passknock` and `passknockd`: one JSON object per line each way.
//!
//! # Format
//!
//! Request: `{"op":"grant","address":"203.0.113.7","services":["sip"],"ttl":"2h","note":"…"}`;
//! `revoke`/`unban` take `address`; `ban` takes `address`, `ttl`, `reason`; `list` may take
//! `limit` (rows of each list, those ending first); `status`, `contacts` and `calls` take nothing;
//! `account-*` manage DISA accounts; `allow-add`, `allow-list`, `allow-remove` standing entries; `log` takes `since`, `address`, `account`, `limit`, and
//! `report` takes `since` (both answered by the daemon from the history, not the engine). The
//! daemon converts each request to a typed engine command once; the engine never sees this
//! format. The reply is one object tagged by `reply`; failures are
//! `{"reply":"error","message":"…"}` and change nothing.
//!
//! Lines are split by [`Lines`], which holds no more than its cap plus one read: a request line
//! may be [`CONTROL_MAX_LINE`](crate::base::defaults::CONTROL_MAX_LINE) bytes, a reply
//! [`CONTROL_MAX_REPLY`](crate::base::defaults::CONTROL_MAX_REPLY).

pub mod client;

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::base::clock::UnixMs;
use crate::base::duration::Ttl;
use crate::base::secret::ShownOnce;
use crate::model::Counts;
use crate::model::Event;
use crate::model::Report;
use crate::model::{Account, Ban, Grant, NameState, StandingEntry};

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
    /// A call from a new address adds a grant instead of replacing the account's others.
    #[serde(default)]
    pub keep_several: bool,
}

/// A line went past its cap; the connection is done with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a line over {max} bytes")]
pub struct TooLong {
    pub max: usize,
}

/// Splits the bytes of one connection into lines (newline excluded) of at most `max` bytes.
/// Bytes come in with [`Lines::feed`] as they are read; nothing past `max` plus the last read is
/// ever held, because a line is refused as soon as it passes the cap, newline or not.
#[derive(Debug)]
pub struct Lines {
    buf: Vec<u8>,
    max: usize,
    /// Bytes at the front of `buf` already searched for a newline.
    scanned: usize,
}

impl Lines {
    pub fn new(max: usize) -> Lines {
        Lines {
            buf: Vec::new(),
            max,
            scanned: 0,
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held, for tests of the cap.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole line, [`TooLong`] once the line under way passes the cap (whatever comes
    /// after it is not read), or `None` until more bytes come.
    pub fn next_line(&mut self) -> Option<Result<Vec<u8>, TooLong>> {
        match self.buf[self.scanned..].iter().position(|b| *b == b'\n') {
            Some(i) => {
                let end = self.scanned + i;
                self.scanned = 0;
                if end > self.max {
                    return Some(Err(TooLong { max: self.max }));
                }
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                Some(Ok(line))
            }
            None if self.buf.len() > self.max => Some(Err(TooLong { max: self.max })),
            None => {
                self.scanned = self.buf.len();
                None
            }
        }
    }

    /// What is left when the peer closes: a last line without its newline, if any.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        self.scanned = 0;
        (!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf))
    }
}

/// Reads one request line; the error is what the asker is told.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    serde_json::from_slice(line.trim_ascii_end()).map_err(|e| format!("bad request: {e}"))
}

/// Reads one reply line.
pub fn parse_reply(line: &[u8]) -> Result<Reply, String> {
    serde_json::from_slice(line.trim_ascii_end()).map_err(|e| e.to_string())
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
    /// Recent dropped registration attempts by account endpoints; answered by the daemon.
    Attempts,
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
    /// Audit events from the history, newest last: those of the last `since` (default 24h), of
    /// one address, of one account (or knock profile); at most `limit`, the newest.
    Log {
        #[serde(default)]
        since: Option<Ttl>,
        #[serde(default)]
        address: Option<IpAddr>,
        #[serde(default)]
        account: Option<String>,
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Counts and lists over the last `since` (default 24h), for an admin's mail.
    Report {
        #[serde(default)]
        since: Option<Ttl>,
    },
    /// A standing entry: `targets` are addresses, networks or DNS names; no services means the
    /// config's default services.
    AllowAdd {
        name: String,
        targets: Vec<String>,
        #[serde(default)]
        services: Vec<String>,
        #[serde(default)]
        note: String,
    },
    AllowList,
    AllowRemove {
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
    /// How many grants an address has, and when its access now ends (the CLI knows how to show it;
    /// the daemon sends none today: holds are the AMI listener's own, never asked over the socket).
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
    /// `active`: the SIP attempt reader runs. One row per endpoint and address, newest first.
    Attempts {
        active: bool,
        now: UnixMs,
        attempts: Vec<AttemptEntry>,
    },
    /// The new passcode is in this reply and nowhere else.
    AccountCreated {
        account: Account,
        passcode: ShownOnce,
    },
    Accounts {
        accounts: Vec<Account>,
    },
    /// Reply to `log`: `more` when older events in the window were left out.
    Events {
        now: UnixMs,
        events: Vec<Event>,
        more: bool,
    },
    Report(Box<Report>),
    /// A standing entry added or removed (`removed` says which).
    Standing {
        entry: StandingEntry,
        removed: bool,
        firewall: Applied,
    },
    /// Every standing entry, and what each DNS name they hold stands for now.
    StandingList {
        now: UnixMs,
        entries: Vec<StandingEntry>,
        names: Vec<NameState>,
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
    /// How element changes reach the kernel: `netlink`, or `nft` and why. Empty from an older
    /// daemon.
    #[serde(default)]
    pub firewall_path: String,
    pub now: UnixMs,
    /// Absent from an older daemon's reply: zeros then.
    #[serde(default)]
    pub last_hour: Counts,
    #[serde(default)]
    pub last_24h: Counts,
    /// Standing entries (`passknock allow`), and each DNS name they hold with its addresses and
    /// when it last resolved. Absent from an older daemon.
    #[serde(default)]
    pub standing: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<NameState>,
    /// The SIP attempt reader's counts since the daemon started; absent when it does not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_attempts: Option<crate::observe::attempts::SipAttemptCounts>,
    /// What the SIP doors do, and what responsive SIP dropped over its rate; absent when off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_door: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_rate_drops: Option<u64>,
    /// The store several nodes share, the link to it and the nodes; absent with SQLite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::model::ClusterView>,
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

/// An address that tried to register (or call) as an account's endpoint, lately.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptEntry {
    pub endpoint: String,
    pub address: IpAddr,
    pub count: u32,
    pub last_seen: UnixMs,
    pub user_agent: Option<String>,
    /// Whether nothing that could belong to this endpoint was forgotten to make room.
    pub complete: bool,
}

/// A live PJSIP call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallEntry {
    pub channel: String,
    pub address: IpAddr,
    pub since: UnixMs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::defaults;

    #[test]
    fn a_flood_without_newline_is_refused_at_the_cap() {
        let mut lines = Lines::new(defaults::CONTROL_MAX_LINE);
        let chunk = [b'x'; 8 * 1024];
        let mut refused = false;
        for _ in 0..128 {
            lines.feed(&chunk);
            assert!(lines.buffered() <= defaults::CONTROL_MAX_LINE + chunk.len());
            if let Some(r) = lines.next_line() {
                assert_eq!(
                    r,
                    Err(TooLong {
                        max: defaults::CONTROL_MAX_LINE
                    })
                );
                refused = true;
                break;
            }
        }
        assert!(refused);
    }

    #[test]
    fn requests_round_trip_and_a_last_line_needs_no_newline() {
        let mut lines = Lines::new(defaults::CONTROL_MAX_LINE);
        lines.feed(b"{\"op\":\"status\"}\r\n{\"op\":\"revoke\",\"address\":\"203.0.113.7\"}");
        let first = lines.next_line().unwrap().unwrap();
        assert_eq!(parse_request(&first), Ok(Request::Status));
        assert_eq!(lines.next_line(), None);
        let last = lines.finish().unwrap();
        assert_eq!(
            parse_request(&last),
            Ok(Request::Revoke {
                address: "203.0.113.7".into()
            })
        );
        assert!(parse_request(b"{\"op\":\"hold\"}")
            .unwrap_err()
            .starts_with("bad request: "));
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests: whatever bytes a peer sends and however they are cut, lines never pass the
    //! cap, nothing more than the cap and one read is held, the cuts do not change the lines, and
    //! parsing a line never panics.
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 32;

    #[derive(Debug, PartialEq)]
    enum Got {
        Line(Vec<u8>),
        TooLong,
        Last(Vec<u8>),
    }

    /// Feeds `pieces` in order, taking lines after each, as the daemon does; stops at `TooLong`.
    fn read_all<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<Got>, TestCaseError> {
        let mut lines = Lines::new(MAX);
        let mut out = Vec::new();
        for p in pieces {
            lines.feed(p);
            loop {
                match lines.next_line() {
                    Some(Ok(l)) => {
                        prop_assert!(l.len() <= MAX);
                        out.push(Got::Line(l));
                    }
                    Some(Err(_)) => {
                        out.push(Got::TooLong);
                        return Ok(out);
                    }
                    None => break,
                }
            }
            prop_assert!(lines.buffered() <= MAX + p.len(), "held {}", lines.buffered());
        }
        if let Some(last) = lines.finish() {
            prop_assert!(last.len() <= MAX);
            out.push(Got::Last(last));
        }
        Ok(out)
    }

    fn request_line() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(r#"{"op":"status"}"#.to_string()),
            "[a-z0-9.:]{0,20}".prop_map(|a| format!(r#"{{"op":"grant","address":"{a}","ttl":"1h"}}"#)),
            "[a-z0-9 ]{0,8}".prop_map(|t| format!(r#"{{"op":"ban","address":"::1","ttl":"{t}"}}"#)),
            (0u64..u64::MAX).prop_map(|n| format!(r#"{{"op":"list","limit":{n}}}"#)),
            "[{}\\[\\]\":,a-z0-9 -]{0,40}",
            ".{0,40}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn lines_are_capped_and_cuts_change_nothing(
            // About one byte in 32 a newline: lines fall either side of the cap.
            text in proptest::collection::vec(any::<u8>(), 0..300)
                .prop_map(|v| v.into_iter().map(|b| if b % 32 == 0 { b'\n' } else { b }).collect::<Vec<u8>>()),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..16),
        ) {
            let whole = read_all([text.as_slice()])?;
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(text.len() + 1)).collect();
            at.sort_unstable();
            let mut pieces = Vec::new();
            let mut from = 0;
            for cut in at {
                pieces.push(&text[from..cut]);
                from = cut;
            }
            pieces.push(&text[from..]);
            prop_assert_eq!(read_all(pieces)?, whole);
        }

        #[test]
        fn any_line_is_a_request_or_refused(line in request_line(), junk in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse_request(line.as_bytes());
            let _ = parse_request(&junk);
            let _ = parse_reply(line.as_bytes());
            let _ = parse_reply(&junk);
        }

        #[test]
        fn requests_survive_the_wire(address in "[ -~]{0,30}", note in ".{0,30}", limit in proptest::option::of(any::<usize>())) {
            for req in [
                Request::Grant { address: address.clone(), services: vec![note.clone()], ttl: None, note: note.clone() },
                Request::Ban { address: address.clone(), ttl: None, reason: note.clone() },
                Request::List { limit },
            ] {
                let mut wire = serde_json::to_vec(&req).unwrap();
                // One line however odd the text: JSON escapes every newline.
                prop_assert!(!wire.contains(&b'\n'));
                wire.push(b'\n');
                let mut lines = Lines::new(crate::base::defaults::CONTROL_MAX_LINE);
                lines.feed(&wire);
                let line = lines.next_line().unwrap().unwrap();
                prop_assert_eq!(parse_request(&line), Ok(req));
            }
        }
    }
}
