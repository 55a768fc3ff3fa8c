//! Audit events: one type for every grant, ban, lockout, refusal, knock and call. The journal
//! line and the history row are both made from one [`Event`], so they never tell two stories.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::base::clock::UnixMs;
use crate::model::Source;

/// What happened. The kebab-case name is what the store and `--json` hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Grant,
    GrantEnded,
    /// A grant asked for and refused (bad address, unknown service, TTL above the cap).
    GrantRefused,
    /// A grant from the address its holder (an account, a knock profile) already had one at:
    /// that grant lasts longer, in place.
    GrantExtended,
    /// A holder's grant ended by its grant from a new address.
    GrantReplaced,
    /// A DISA grant to the address the account's phone was seen trying to register from (the
    /// `attempted` mode); the grant itself has its own `grant` or `grant-extended` line.
    GrantAttempted,
    Revoke,
    /// A live call holds a grant open past its TTL.
    Hold,
    /// The calls ended: the grant ends at its own expiry again.
    Release,
    Ban,
    BanEnded,
    Unban,
    LockoutNumber,
    LockoutAddress,
    /// Passcode entry suspended for everyone: too many wrong passcodes this hour.
    Suspension,
    PasscodeAccepted,
    PasscodeRefused,
    KnockAccepted,
    KnockRefused,
    /// A call reached the DISA passcode prompt.
    DisaCall,
    /// AMI reported a SIP call starting.
    SipCall,
    /// An account added, removed, disabled, enabled, or given a new passcode or owner numbers.
    Account,
    Reload,
    /// A standing entry added or removed (`passknock allow`).
    Standing,
    /// A standing entry's (or a trusted) DNS name now stands for other addresses, or lost them.
    NameChanged,
}

/// Every kind, for parsing and for tests that walk them all.
pub const KINDS: [Kind; 25] = [
    Kind::Grant,
    Kind::GrantEnded,
    Kind::GrantRefused,
    Kind::GrantExtended,
    Kind::GrantReplaced,
    Kind::GrantAttempted,
    Kind::Revoke,
    Kind::Hold,
    Kind::Release,
    Kind::Ban,
    Kind::BanEnded,
    Kind::Unban,
    Kind::LockoutNumber,
    Kind::LockoutAddress,
    Kind::Suspension,
    Kind::PasscodeAccepted,
    Kind::PasscodeRefused,
    Kind::KnockAccepted,
    Kind::KnockRefused,
    Kind::DisaCall,
    Kind::SipCall,
    Kind::Account,
    Kind::Reload,
    Kind::Standing,
    Kind::NameChanged,
];

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Grant => "grant",
            Kind::GrantEnded => "grant-ended",
            Kind::GrantRefused => "grant-refused",
            Kind::GrantExtended => "grant-extended",
            Kind::GrantReplaced => "grant-replaced",
            Kind::GrantAttempted => "grant-attempted",
            Kind::Revoke => "revoke",
            Kind::Hold => "hold",
            Kind::Release => "release",
            Kind::Ban => "ban",
            Kind::BanEnded => "ban-ended",
            Kind::Unban => "unban",
            Kind::LockoutNumber => "lockout-number",
            Kind::LockoutAddress => "lockout-address",
            Kind::Suspension => "suspension",
            Kind::PasscodeAccepted => "passcode-accepted",
            Kind::PasscodeRefused => "passcode-refused",
            Kind::KnockAccepted => "knock-accepted",
            Kind::KnockRefused => "knock-refused",
            Kind::DisaCall => "disa-call",
            Kind::SipCall => "sip-call",
            Kind::Account => "account",
            Kind::Reload => "reload",
            Kind::Standing => "standing",
            Kind::NameChanged => "name-changed",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        KINDS.into_iter().find(|k| k.as_str() == s)
    }

    /// How the audit line starts.
    fn verb(self) -> &'static str {
        match self {
            Kind::GrantEnded => "grant ended",
            Kind::GrantRefused => "refused grant",
            Kind::GrantExtended => "grant extended",
            Kind::GrantReplaced => "grant replaced",
            Kind::GrantAttempted => "granted where the phone tried to register",
            Kind::BanEnded => "ban ended",
            Kind::LockoutNumber | Kind::LockoutAddress => "lockout",
            Kind::Suspension => "passcode entry suspended",
            Kind::PasscodeAccepted => "passcode accepted",
            Kind::PasscodeRefused => "passcode refused",
            Kind::KnockAccepted => "knock accepted",
            Kind::KnockRefused => "knock refused",
            Kind::DisaCall => "DISA call",
            Kind::SipCall => "SIP call",
            Kind::Reload => "config reloaded",
            Kind::NameChanged => "name changed",
            k => k.as_str(),
        }
    }

    /// What `who` names for this kind, in the audit line.
    fn who_key(self) -> &'static str {
        match self {
            Kind::LockoutNumber | Kind::PasscodeRefused | Kind::DisaCall => "number",
            Kind::PasscodeAccepted | Kind::Account | Kind::GrantAttempted => "account",
            Kind::KnockAccepted | Kind::KnockRefused => "profile",
            Kind::SipCall => "channel",
            Kind::Standing => "entry",
            Kind::NameChanged => "name",
            _ => "who",
        }
    }

    /// Kinds an outsider can cause at packet or call rate. Their rows are counted, one per kind,
    /// address and who per minute, so a flood grows the table by a bounded number of rows a
    /// minute (see `history`).
    pub fn floods(self) -> bool {
        matches!(
            self,
            Kind::KnockRefused | Kind::PasscodeRefused | Kind::GrantRefused | Kind::DisaCall | Kind::SipCall
        )
    }

    /// Refusals, for the report's top refused sources.
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            Kind::KnockRefused | Kind::PasscodeRefused | Kind::GrantRefused
        )
    }
}

/// One audit event; a row of the history table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub time: UnixMs,
    pub kind: Kind,
    /// The address it is about: granted, banned, knocking, calling from.
    pub address: Option<IpAddr>,
    /// Who did it or whom it concerns: `uid 0`, `disa:ann`, an account, a calling number, a
    /// knock profile.
    pub who: String,
    /// Which part of passknock saw it.
    pub source: Option<Source>,
    /// The rest, in words: services and end of a grant, a ban's reason, why something was refused.
    pub detail: String,
    /// Events this row stands for: more than 1 when a flood was counted into one row.
    #[serde(default = "one")]
    pub count: u64,
    /// The node that wrote the row, in a cluster sharing one store; empty on a single box, and
    /// for an event not yet written.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
}

fn one() -> u64 {
    1
}

impl Event {
    pub fn new(kind: Kind, time: UnixMs) -> Event {
        Event {
            time,
            kind,
            address: None,
            who: String::new(),
            source: None,
            detail: String::new(),
            count: 1,
            node: String::new(),
        }
    }

    pub fn address(mut self, a: IpAddr) -> Event {
        self.address = Some(a);
        self
    }

    pub fn who(mut self, who: impl Into<String>) -> Event {
        self.who = who.into();
        self
    }

    pub fn source(mut self, s: Source) -> Event {
        self.source = Some(s);
        self
    }

    pub fn detail(mut self, d: impl Into<String>) -> Event {
        self.detail = d.into();
        self
    }

    /// The audit line: `VERB address=A WHO-KEY="W" source=S DETAIL`, parts left out when empty.
    pub fn line(&self) -> String {
        let mut s = self.kind.verb().to_string();
        if let Some(a) = self.address {
            let _ = write!(s, " address={a}");
        }
        if !self.who.is_empty() {
            let _ = write!(s, " {}={:?}", self.kind.who_key(), self.who);
        }
        if let Some(src) = self.source {
            let _ = write!(s, " source={}", src.as_str());
        }
        if !self.detail.is_empty() {
            s.push(' ');
            s.push_str(&self.detail);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_lines_say_who_in_the_kinds_own_words() {
        for k in KINDS {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
        let e = Event::new(Kind::LockoutNumber, 0)
            .who("701")
            .source(Source::Disa)
            .detail("(DISA passcode failures)");
        assert_eq!(
            e.line(),
            "lockout number=\"701\" source=disa (DISA passcode failures)"
        );
        let g = Event::new(Kind::Grant, 0)
            .address("203.0.113.7".parse().unwrap())
            .who("uid 0")
            .source(Source::Admin)
            .detail("services=sip");
        assert_eq!(
            g.line(),
            "grant address=203.0.113.7 who=\"uid 0\" source=admin services=sip"
        );
        assert_eq!(Event::new(Kind::Suspension, 0).line(), "passcode entry suspended");
    }
}
