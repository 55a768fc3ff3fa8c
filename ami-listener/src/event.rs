//! The AMI events passknock uses, typed; everything else is [`Event::Other`].
//!
//! # Format (as Asterisk 22 sends them)
//!
//! - `ContactStatus`: `URI: sip:701@203.0.113.10:5100`, `ContactStatus: Created|Updated|Reachable|
//!   Unreachable|NonQualified|Unknown|Removed`, `AOR`, `EndpointName`.
//! - `ContactList` (items of `PJSIPShowContacts`): `Endpoint`, `Uri`, `ViaAddr`, `ObjectName`.
//! - Security events (`InvalidPassword`, `ChallengeResponseFailed`, …): `Service`, `AccountID`,
//!   `RemoteAddress: IPV4/UDP/203.0.113.7/5060` (or `IPV6/UDP/2001:db8::7/5060`).
//! - Channels (`Newchannel`, `Newstate`, `Hangup`, and `CoreShowChannel` list items): `Channel`,
//!   `Uniqueid`, `ChannelState` (6 is Up).

use std::net::IpAddr;

pub use crate::addr::RemoteAddress;
use crate::addr::{parse_ip, uri_host};
use crate::codec::Message;

/// One event, typed when passknock uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    ContactStatus(ContactStatus),
    /// An item of the `PJSIPShowContacts` list.
    ContactList(Contact),
    Security(Security),
    Newchannel(Channel),
    Newstate(Channel),
    Hangup(Channel),
    /// An item of the `CoreShowChannels` list.
    CoreShowChannel(Channel),
    /// The end of an event list (`EventList: Complete`), e.g. `ContactListComplete`.
    ListComplete,
    FullyBooted,
    /// Asterisk is stopping or restarting.
    Shutdown,
    /// An event passknock does not use, by name.
    Other(String),
}

/// A field an event must have was missing or unreadable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{event} event without a usable {field}")]
pub struct Malformed {
    pub event: String,
    pub field: &'static str,
}

impl Event {
    /// Types `msg`, which must be an event (have `Event:`).
    pub fn parse(msg: &Message) -> Result<Event, Malformed> {
        let name = msg.event().unwrap_or_default();
        let missing = |field| Malformed {
            event: name.to_string(),
            field,
        };
        if msg.is("EventList", "Complete") {
            return Ok(Event::ListComplete);
        }
        if let Some(kind) = SecurityKind::from_name(name) {
            return Ok(Event::Security(Security {
                kind,
                service: msg.get("Service").unwrap_or_default().to_string(),
                account: msg.get("AccountID").unwrap_or_default().to_string(),
                remote: msg
                    .get("RemoteAddress")
                    .map(|a| RemoteAddress::parse(a).ok_or_else(|| missing("RemoteAddress")))
                    .transpose()?,
            }));
        }
        Ok(match name {
            "ContactStatus" => {
                let uri = msg.get("URI").ok_or_else(|| missing("URI"))?;
                let endpoint = non_empty(msg.get("EndpointName"))
                    .or_else(|| non_empty(msg.get("AOR")))
                    .ok_or_else(|| missing("EndpointName"))?;
                let state = msg.get("ContactStatus").ok_or_else(|| missing("ContactStatus"))?;
                Event::ContactStatus(ContactStatus {
                    endpoint: endpoint.to_string(),
                    uri: uri.to_string(),
                    address: uri_host(uri),
                    removed: state.eq_ignore_ascii_case("Removed"),
                })
            }
            "ContactList" => {
                let uri = msg.get("Uri").ok_or_else(|| missing("Uri"))?;
                let endpoint = non_empty(msg.get("Endpoint"))
                    .or_else(|| {
                        msg.get("ObjectName")
                            .and_then(|o| o.split(';').next())
                            .filter(|s| !s.is_empty())
                    })
                    .ok_or_else(|| missing("Endpoint"))?;
                let address = uri_host(uri).or_else(|| msg.get("ViaAddr").and_then(parse_ip));
                Event::ContactList(Contact {
                    endpoint: endpoint.to_string(),
                    uri: uri.to_string(),
                    address,
                })
            }
            "Newchannel" | "Newstate" | "Hangup" | "CoreShowChannel" => {
                let channel = Channel {
                    name: msg.get("Channel").ok_or_else(|| missing("Channel"))?.to_string(),
                    id: non_empty(msg.get("Uniqueid"))
                        .ok_or_else(|| missing("Uniqueid"))?
                        .to_string(),
                    up: msg.get("ChannelState") == Some("6"),
                };
                match name {
                    "Newchannel" => Event::Newchannel(channel),
                    "Newstate" => Event::Newstate(channel),
                    "Hangup" => Event::Hangup(channel),
                    _ => Event::CoreShowChannel(channel),
                }
            }
            "FullyBooted" => Event::FullyBooted,
            "Shutdown" => Event::Shutdown,
            other => Event::Other(other.to_string()),
        })
    }
}

fn non_empty(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| !s.is_empty())
}

/// A contact changed: registered, refreshed, or (with `removed`) gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactStatus {
    pub endpoint: String,
    pub uri: String,
    /// The host of the contact URI when it is an IP address (with `rewrite_contact`, the address
    /// the phone registered from). `None` for a hostname.
    pub address: Option<IpAddr>,
    pub removed: bool,
}

/// A registered contact, as listed by `PJSIPShowContacts`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Contact {
    pub endpoint: String,
    pub uri: String,
    pub address: Option<IpAddr>,
}

/// A channel event's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channel {
    /// `PJSIP/701-00000000`.
    pub name: String,
    /// Asterisk's `Uniqueid`, stable for the channel's life.
    pub id: String,
    /// `ChannelState: 6`.
    pub up: bool,
}

impl Channel {
    /// Only PJSIP channels have a SIP remote address.
    pub fn is_pjsip(&self) -> bool {
        self.name.starts_with("PJSIP/")
    }
}

/// A security event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Security {
    pub kind: SecurityKind,
    /// `PJSIP`, `AMI`, `IAX2`, …
    pub service: String,
    pub account: String,
    pub remote: Option<RemoteAddress>,
}

/// The security class of AMI events (Asterisk's `security_events.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecurityKind {
    FailedAcl,
    InvalidAccountId,
    SessionLimit,
    MemoryLimit,
    LoadAverageLimit,
    RequestNotSupported,
    RequestNotAllowed,
    AuthMethodNotAllowed,
    RequestBadFormat,
    SuccessfulAuth,
    UnexpectedAddress,
    ChallengeResponseFailed,
    InvalidPassword,
    ChallengeSent,
    InvalidTransport,
}

impl SecurityKind {
    const ALL: [(SecurityKind, &'static str); 15] = [
        (SecurityKind::FailedAcl, "FailedACL"),
        (SecurityKind::InvalidAccountId, "InvalidAccountID"),
        (SecurityKind::SessionLimit, "SessionLimit"),
        (SecurityKind::MemoryLimit, "MemoryLimit"),
        (SecurityKind::LoadAverageLimit, "LoadAverageLimit"),
        (SecurityKind::RequestNotSupported, "RequestNotSupported"),
        (SecurityKind::RequestNotAllowed, "RequestNotAllowed"),
        (SecurityKind::AuthMethodNotAllowed, "AuthMethodNotAllowed"),
        (SecurityKind::RequestBadFormat, "RequestBadFormat"),
        (SecurityKind::SuccessfulAuth, "SuccessfulAuth"),
        (SecurityKind::UnexpectedAddress, "UnexpectedAddress"),
        (SecurityKind::ChallengeResponseFailed, "ChallengeResponseFailed"),
        (SecurityKind::InvalidPassword, "InvalidPassword"),
        (SecurityKind::ChallengeSent, "ChallengeSent"),
        (SecurityKind::InvalidTransport, "InvalidTransport"),
    ];

    pub fn from_name(name: &str) -> Option<SecurityKind> {
        Self::ALL
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(k, _)| *k)
    }

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }

    /// Whether the event counts against the remote address. A successful login and the digest
    /// challenge every honest phone gets first do not; everything else in the class does.
    pub fn is_failure(self) -> bool {
        !matches!(self, SecurityKind::SuccessfulAuth | SecurityKind::ChallengeSent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(pairs: &[(&str, &str)]) -> Message {
        Message {
            fields: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn real_events_type() {
        // As Asterisk 22 sent them in the harness.
        let e = Event::parse(&msg(&[
            ("Event", "ChallengeResponseFailed"),
            ("Privilege", "security,all"),
            ("Severity", "Error"),
            ("Service", "PJSIP"),
            ("AccountID", "702"),
            ("RemoteAddress", "IPV4/UDP/203.0.113.20/5102"),
        ]))
        .unwrap();
        let Event::Security(s) = e else { panic!("{e:?}") };
        assert_eq!(s.kind, SecurityKind::ChallengeResponseFailed);
        assert!(s.kind.is_failure());
        assert_eq!(s.remote.unwrap().addr.ip().to_string(), "203.0.113.20");
        assert!(!SecurityKind::ChallengeSent.is_failure());

        let e = Event::parse(&msg(&[
            ("Event", "ContactStatus"),
            ("URI", "sip:701@203.0.113.10:5100"),
            ("ContactStatus", "Removed"),
            ("AOR", "701"),
            ("EndpointName", "701"),
        ]))
        .unwrap();
        assert_eq!(
            e,
            Event::ContactStatus(ContactStatus {
                endpoint: "701".into(),
                uri: "sip:701@203.0.113.10:5100".into(),
                address: Some("203.0.113.10".parse().unwrap()),
                removed: true
            })
        );
        let e = Event::parse(&msg(&[
            ("Event", "ContactList"),
            ("ActionID", "1"),
            ("ObjectName", "702;@55eb"),
            ("ViaAddr", "203.0.113.20"),
            ("Uri", "sip:702@host.example"),
        ]))
        .unwrap();
        let Event::ContactList(c) = e else { panic!() };
        assert_eq!(
            (c.endpoint.as_str(), c.address),
            ("702", "203.0.113.20".parse().ok())
        );
        let e = Event::parse(&msg(&[
            ("Event", "Newstate"),
            ("Channel", "PJSIP/701-00000000"),
            ("ChannelState", "6"),
            ("Uniqueid", "1795249892.0"),
        ]))
        .unwrap();
        assert_eq!(
            e,
            Event::Newstate(Channel {
                name: "PJSIP/701-00000000".into(),
                id: "1795249892.0".into(),
                up: true
            })
        );
        assert_eq!(
            Event::parse(&msg(&[
                ("Event", "ContactListComplete"),
                ("EventList", "Complete")
            ])),
            Ok(Event::ListComplete)
        );
    }

    #[test]
    fn missing_fields_are_malformed_not_panics() {
        for m in [
            msg(&[("Event", "ContactStatus")]),
            msg(&[("Event", "ContactStatus"), ("URI", "sip:x@1.2.3.4")]),
            msg(&[("Event", "ContactList")]),
            msg(&[("Event", "Hangup"), ("Channel", "PJSIP/1")]),
            msg(&[("Event", "Newchannel"), ("Uniqueid", "1")]),
            msg(&[("Event", "InvalidPassword"), ("RemoteAddress", "IPV4/UDP/x/1")]),
        ] {
            assert!(Event::parse(&m).is_err(), "{m}");
        }
        // A security event without an address is typed; there is just no one to count it against.
        let Ok(Event::Security(s)) = Event::parse(&msg(&[("Event", "FailedACL")])) else {
            panic!()
        };
        assert_eq!(s.remote, None);
        assert_eq!(
            Event::parse(&msg(&[("Event", "VarSet")])),
            Ok(Event::Other("VarSet".into()))
        );
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests: whatever fields a peer sends, typing an event never panics, and the
    //! address helpers take any text.
    use super::*;
    use proptest::prelude::*;

    /// Field names the parser looks at, and values shaped like what it expects, or not.
    fn field() -> impl Strategy<Value = (String, String)> {
        let key = prop_oneof![
            Just("Event"),
            Just("EventList"),
            Just("URI"),
            Just("Uri"),
            Just("ContactStatus"),
            Just("EndpointName"),
            Just("AOR"),
            Just("Endpoint"),
            Just("ObjectName"),
            Just("ViaAddr"),
            Just("RemoteAddress"),
            Just("Channel"),
            Just("Uniqueid"),
            Just("ChannelState"),
        ];
        let value = prop_oneof![
            prop::sample::select(vec![
                "ContactStatus",
                "ContactList",
                "InvalidPassword",
                "ChallengeResponseFailed",
                "Newchannel",
                "Hangup",
                "CoreShowChannel",
                "Complete",
                "Removed",
                "6",
            ])
            .prop_map(str::to_string),
            "(IPV[46]|ipv4)?/[A-Z]{0,3}/[0-9a-f.:\\[\\]]{0,20}/[0-9]{0,6}",
            "<?sips?:([0-9]{1,4}@)?(\\[[0-9a-f:]{0,20}\\]|[0-9.]{0,16})(:[0-9]{0,6})?[;>?]?",
            "[ -~]{0,24}",
            ".{0,12}",
        ];
        (key.prop_map(str::to_string), value)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_event_types_or_is_malformed(fields in proptest::collection::vec(field(), 0..8)) {
            let _ = Event::parse(&Message { fields });
        }

        #[test]
        fn address_helpers_take_any_text(s in ".{0,40}") {
            let _ = RemoteAddress::parse(&s);
        }
    }
}
