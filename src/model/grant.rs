//! Grants and bans as everyone speaks of them: what the store keeps, the table enforces and the
//! control socket lists, and where each one came from.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::base::clock::UnixMs;

/// Where a grant came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Disa,
    Knock,
    Admin,
    /// The AMI listener: bans for failed logins, holds for live calls.
    Ami,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Disa => "disa",
            Source::Knock => "knock",
            Source::Admin => "admin",
            Source::Ami => "ami",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Source> {
        match s {
            "disa" => Some(Source::Disa),
            "knock" => Some(Source::Knock),
            "admin" => Some(Source::Admin),
            "ami" => Some(Source::Ami),
            _ => None,
        }
    }
}

/// A grant about to be written.
#[derive(Clone, Debug)]
pub struct NewGrant {
    pub address: IpAddr,
    pub services: Vec<String>,
    pub source: Source,
    pub who: String,
    pub note: String,
    pub expires: UnixMs,
}

impl NewGrant {
    /// The grant as a store keeps it: row `id`, made at `created` by `node`, with no hold yet.
    pub fn stored(&self, id: i64, created: UnixMs, node: String) -> Grant {
        Grant {
            id,
            address: self.address,
            services: self.services.clone(),
            source: self.source,
            who: self.who.clone(),
            note: self.note.clone(),
            created,
            expires: self.expires,
            hold_until: None,
            node,
        }
    }
}

/// Access for one address to some services until `expires` (or `hold_until`, if later).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: i64,
    pub address: IpAddr,
    pub services: Vec<String>,
    pub source: Source,
    pub who: String,
    pub note: String,
    pub created: UnixMs,
    pub expires: UnixMs,
    /// Held open past `expires` while a call from this address is up.
    pub hold_until: Option<UnixMs>,
    /// The cluster node that granted it; empty on one box (and for grants written before).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
}

impl Grant {
    /// When access really ends.
    pub fn end(&self) -> UnixMs {
        self.expires.max(self.hold_until.unwrap_or(0))
    }
}

/// An address kept off every protected port until `expires`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    pub address: IpAddr,
    pub reason: String,
    pub created: UnixMs,
    pub expires: UnixMs,
}
