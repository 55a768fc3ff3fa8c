//! One logged-in AMI connection, with no IO: messages in, [`Update`]s and actions out.
//!
//! Right after login it re-syncs: `PJSIPShowContacts` (every registered contact) and
//! `CoreShowChannels` (every channel), then asks each PJSIP channel for
//! `CHANNEL(pjsip,remote_addr)` with `Getvar`. Live events that arrive while a list is still
//! coming are held back and replayed after it, so a list never overwrites something newer.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use crate::codec::{Action, Message};
use crate::event::{Channel, Contact, ContactStatus, Event, Security};

/// Most PJSIP channels tracked at once, and most contacts in one re-sync: a bound on what a broken
/// or hostile peer can make us hold, far above any PBX passknock guards.
pub const MAX_CHANNELS: usize = 50_000;
pub const MAX_CONTACTS: usize = 200_000;
/// Most contact changes held back while the contact list is coming.
const MAX_HELD: usize = 10_000;

/// What the listener tells the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// Logged in; a re-sync follows.
    LoggedIn {
        banner: String,
    },
    /// Every registered contact, from the re-sync after a login: replaces what was known.
    Contacts(Vec<Contact>),
    /// A contact registered, refreshed, or (`removed`) went away.
    Contact(ContactStatus),
    /// The ids of every PJSIP channel alive at the re-sync after a login: calls known before and
    /// not in here have ended while we were not looking. Their addresses follow as [`Update::CallUp`].
    CallsPresent(BTreeSet<String>),
    /// A PJSIP channel is up and this is its SIP peer's address.
    CallUp(Call),
    /// A channel reported by [`Update::CallUp`] hung up.
    CallDown {
        id: String,
    },
    Security(Security),
    /// The connection ended; the listener reconnects with backoff.
    Disconnected {
        reason: String,
    },
}

/// A live PJSIP channel and its remote address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// Asterisk's `Uniqueid`.
    pub id: String,
    /// `PJSIP/701-00000000`.
    pub channel: String,
    pub remote: IpAddr,
}

/// What one message led to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub updates: Vec<Update>,
    pub actions: Vec<Action>,
    /// Events that were missing what we need, actions Asterisk refused: worth a log line.
    pub problems: Vec<String>,
}

#[derive(Debug)]
struct Pending {
    name: String,
    /// A `Getvar` is in flight for it.
    asked: bool,
}

#[derive(Debug)]
pub struct Session {
    next_id: u64,
    contacts_sync: Option<ContactsSync>,
    channels_sync: Option<ChannelsSync>,
    /// PJSIP channels whose address is not known yet.
    pending: HashMap<String, Pending>,
    /// `Getvar` ActionID → channel id.
    getvars: HashMap<String, String>,
    /// Channels reported up.
    up: BTreeSet<String>,
}

#[derive(Debug)]
struct ContactsSync {
    id: String,
    list: Vec<Contact>,
    held: Vec<ContactStatus>,
}

#[derive(Debug)]
struct ChannelsSync {
    id: String,
    ids: BTreeSet<String>,
}

impl Session {
    /// A session for a connection that just logged in, and the re-sync actions to send.
    pub fn start() -> (Session, Vec<Action>) {
        let mut s = Session {
            next_id: 0,
            contacts_sync: None,
            channels_sync: None,
            pending: HashMap::new(),
            getvars: HashMap::new(),
            up: BTreeSet::new(),
        };
        let contacts = s.id("contacts");
        let channels = s.id("channels");
        s.contacts_sync = Some(ContactsSync {
            id: contacts.clone(),
            list: Vec::new(),
            held: Vec::new(),
        });
        s.channels_sync = Some(ChannelsSync {
            id: channels.clone(),
            ids: BTreeSet::new(),
        });
        let actions = vec![
            Action::new("PJSIPShowContacts", contacts),
            Action::new("CoreShowChannels", channels),
        ];
        (s, actions)
    }

    /// A fresh ActionID; `pk-` marks ours.
    pub fn id(&mut self, what: &str) -> String {
        self.next_id += 1;
        format!("pk-{what}-{}", self.next_id)
    }

    /// Whether the re-sync after login is complete.
    pub fn synced(&self) -> bool {
        self.contacts_sync.is_none() && self.channels_sync.is_none()
    }

    pub fn on_message(&mut self, msg: &Message) -> Output {
        let mut out = Output::default();
        if msg.event().is_some() {
            match Event::parse(msg) {
                Ok(ev) => self.on_event(ev, msg.action_id(), &mut out),
                Err(e) => out.problems.push(e.to_string()),
            }
        } else if msg.response().is_some() {
            self.on_response(msg, &mut out);
        }
        out
    }

    fn on_response(&mut self, msg: &Message, out: &mut Output) {
        let Some(aid) = msg.action_id() else { return };
        let ok = msg.is("Response", "Success");
        if let Some(chan) = self.getvars.remove(aid) {
            let remote = msg.get("Value").filter(|_| ok).and_then(crate::addr::host_port);
            match (self.pending.get_mut(&chan), remote) {
                (Some(_), Some(remote)) => {
                    let p = self.pending.remove(&chan).expect("present");
                    self.up.insert(chan.clone());
                    out.updates.push(Update::CallUp(Call {
                        id: chan,
                        channel: p.name,
                        remote,
                    }));
                }
                // No address yet (an outgoing leg before its INVITE): ask again when it is up.
                (Some(p), None) => p.asked = false,
                (None, _) => {} // hung up meanwhile
            }
            return;
        }
        if !ok {
            let failed_sync = |s: Option<&str>| s == Some(aid);
            if failed_sync(self.contacts_sync.as_ref().map(|s| s.id.as_str())) {
                let s = self.contacts_sync.take().expect("checked");
                let why = msg.get("Message").unwrap_or("no reason");
                // Asterisk answers an empty list with an error: "No Contacts found".
                if why.eq_ignore_ascii_case("No Contacts found") {
                    out.updates.push(Update::Contacts(Vec::new()));
                } else {
                    out.problems.push(format!(
                        "PJSIPShowContacts refused ({why}); does the manager user have write = system?"
                    ));
                }
                out.updates.extend(s.held.into_iter().map(Update::Contact));
            } else if failed_sync(self.channels_sync.as_ref().map(|s| s.id.as_str())) {
                self.channels_sync = None;
                out.problems.push(format!(
                    "CoreShowChannels refused ({}); does the manager user have write = system?",
                    msg.get("Message").unwrap_or("no reason")
                ));
            }
        }
    }

    fn on_event(&mut self, ev: Event, aid: Option<&str>, out: &mut Output) {
        let is = |sync: Option<&str>| sync.is_some() && sync == aid;
        match ev {
            Event::ContactList(c) => {
                if let Some(s) = self.contacts_sync.as_mut().filter(|s| Some(s.id.as_str()) == aid) {
                    if s.list.len() < MAX_CONTACTS {
                        s.list.push(c);
                    }
                }
            }
            Event::ListComplete if is(self.contacts_sync.as_ref().map(|s| s.id.as_str())) => {
                let s = self.contacts_sync.take().expect("checked");
                out.updates.push(Update::Contacts(s.list));
                out.updates.extend(s.held.into_iter().map(Update::Contact));
            }
            Event::ListComplete if is(self.channels_sync.as_ref().map(|s| s.id.as_str())) => {
                let s = self.channels_sync.take().expect("checked");
                out.updates.push(Update::CallsPresent(s.ids));
            }
            Event::ListComplete => {}
            Event::ContactStatus(c) => match self.contacts_sync.as_mut() {
                Some(s) if s.held.len() < MAX_HELD => s.held.push(c),
                Some(_) => out
                    .problems
                    .push("too many contact changes during re-sync".into()),
                None => out.updates.push(Update::Contact(c)),
            },
            Event::CoreShowChannel(ch) => {
                if ch.is_pjsip() && is(self.channels_sync.as_ref().map(|s| s.id.as_str())) {
                    if let Some(s) = self.channels_sync.as_mut() {
                        if s.ids.len() < MAX_CHANNELS {
                            s.ids.insert(ch.id.clone());
                        }
                    }
                    self.track(ch, out);
                }
            }
            Event::Newchannel(ch) => {
                if ch.is_pjsip() {
                    // Born during the re-sync, maybe after the list was made: it is alive.
                    if let Some(s) = self.channels_sync.as_mut() {
                        if s.ids.len() < MAX_CHANNELS {
                            s.ids.insert(ch.id.clone());
                        }
                    }
                    self.track(ch, out);
                }
            }
            Event::Newstate(ch) => {
                if ch.up {
                    if let Some(p) = self.pending.get_mut(&ch.id).filter(|p| !p.asked) {
                        p.asked = true;
                        let a = self.getvar(&ch);
                        out.actions.push(a);
                    }
                }
            }
            Event::Hangup(ch) => {
                self.pending.remove(&ch.id);
                if let Some(s) = self.channels_sync.as_mut() {
                    s.ids.remove(&ch.id);
                }
                if self.up.remove(&ch.id) {
                    out.updates.push(Update::CallDown { id: ch.id });
                }
            }
            Event::Security(s) => out.updates.push(Update::Security(s)),
            Event::FullyBooted | Event::Shutdown | Event::Other(_) => {}
        }
    }

    /// Starts asking for a PJSIP channel's remote address.
    fn track(&mut self, ch: Channel, out: &mut Output) {
        if self.up.contains(&ch.id) || self.pending.contains_key(&ch.id) {
            return;
        }
        if self.pending.len() + self.up.len() >= MAX_CHANNELS {
            out.problems.push(format!(
                "more than {MAX_CHANNELS} channels; not tracking {}",
                ch.name
            ));
            return;
        }
        let a = self.getvar(&ch);
        out.actions.push(a);
        self.pending.insert(
            ch.id,
            Pending {
                name: ch.name,
                asked: true,
            },
        );
    }

    fn getvar(&mut self, ch: &Channel) -> Action {
        let id = self.id("getvar");
        self.getvars.insert(id.clone(), ch.id.clone());
        // Replies for channels that vanished are dropped; this bounds the map all the same.
        if self.getvars.len() > MAX_CHANNELS {
            self.getvars.clear();
        }
        Action::new("Getvar", id)
            .header("Channel", ch.name.clone())
            .header("Variable", "CHANNEL(pjsip,remote_addr)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Decoder, DecoderCaps, Frame};

    /// Feeds AMI text (blocks separated by blank lines) through a decoder into the session.
    fn feed(s: &mut Session, text: &str) -> Output {
        let mut dec = Decoder::without_greeting(DecoderCaps::default());
        let mut buf = text.replace('\n', "\r\n").into_bytes();
        let mut all = Output::default();
        while let Some(f) = dec.decode(&mut buf) {
            if let Frame::Message(m) = f {
                let o = s.on_message(&m);
                all.updates.extend(o.updates);
                all.actions.extend(o.actions);
                all.problems.extend(o.problems);
            }
        }
        all
    }

    #[test]
    fn resync_holds_back_live_contact_changes() {
        let (mut s, actions) = Session::start();
        assert_eq!(actions[0].name, "PJSIPShowContacts");
        assert_eq!(actions[1].name, "CoreShowChannels");
        let (c, ch) = (actions[0].id.clone(), actions[1].id.clone());
        let o = feed(
            &mut s,
            &format!(
                "Response: Success\nActionID: {c}\nEventList: start\n\n\
                 Event: ContactList\nActionID: {c}\nEndpoint: 701\nUri: sip:701@203.0.113.10:5100\n\n\
                 Event: ContactStatus\nURI: sip:701@203.0.113.10:5100\nContactStatus: Removed\nAOR: 701\nEndpointName: 701\n\n\
                 Event: ContactListComplete\nActionID: {c}\nEventList: Complete\n\n"
            ),
        );
        let ip: IpAddr = "203.0.113.10".parse().unwrap();
        assert_eq!(
            o.updates,
            vec![
                Update::Contacts(vec![Contact {
                    endpoint: "701".into(),
                    uri: "sip:701@203.0.113.10:5100".into(),
                    address: Some(ip)
                }]),
                Update::Contact(ContactStatus {
                    endpoint: "701".into(),
                    uri: "sip:701@203.0.113.10:5100".into(),
                    address: Some(ip),
                    removed: true
                })
            ]
        );
        assert!(!s.synced());
        let o = feed(
            &mut s,
            &format!("Event: CoreShowChannelsComplete\nActionID: {ch}\nEventList: Complete\n\n"),
        );
        assert_eq!(o.updates, vec![Update::CallsPresent(BTreeSet::new())]);
        assert!(s.synced());
        // After the re-sync, changes flow at once.
        let o = feed(
            &mut s,
            "Event: ContactStatus\nURI: sip:702@203.0.113.20:5104\nContactStatus: NonQualified\nAOR: 702\nEndpointName: 702\n\n",
        );
        assert!(matches!(&o.updates[..], [Update::Contact(c)] if !c.removed && c.endpoint == "702"));
    }

    #[test]
    fn calls_get_their_address_and_end() {
        let (mut s, actions) = Session::start();
        let ch = actions[1].id.clone();
        let o = feed(
            &mut s,
            &format!(
                "Event: CoreShowChannel\nActionID: {ch}\nChannel: PJSIP/701-00000000\nUniqueid: 1.0\nChannelState: 6\n\n\
                 Event: CoreShowChannel\nActionID: {ch}\nChannel: Local/600@x-00000001;1\nUniqueid: 1.1\n\n\
                 Event: Newchannel\nChannel: PJSIP/702-00000002\nUniqueid: 1.2\nChannelState: 4\n\n\
                 Event: CoreShowChannelsComplete\nActionID: {ch}\nEventList: Complete\n\n"
            ),
        );
        assert_eq!(
            o.updates,
            vec![Update::CallsPresent(BTreeSet::from(["1.0".into(), "1.2".into()]))]
        );
        let gv: Vec<_> = o.actions.iter().filter(|a| a.name == "Getvar").collect();
        assert_eq!(gv.len(), 2);
        assert_eq!(gv[0].headers[0].1, "PJSIP/701-00000000");
        let o = feed(
            &mut s,
            &format!(
                "Response: Success\nActionID: {}\nVariable: CHANNEL(pjsip,remote_addr)\nValue: 203.0.113.10:5108\n\n\
                 Response: Success\nActionID: {}\nValue: \n\n",
                gv[0].id, gv[1].id
            ),
        );
        assert_eq!(
            o.updates,
            vec![Update::CallUp(Call {
                id: "1.0".into(),
                channel: "PJSIP/701-00000000".into(),
                remote: "203.0.113.10".parse().unwrap()
            })]
        );
        // The second had no address yet; it is asked again once up.
        let o = feed(
            &mut s,
            "Event: Newstate\nChannel: PJSIP/702-00000002\nUniqueid: 1.2\nChannelState: 6\n\n",
        );
        assert_eq!(o.actions.len(), 1);
        let again = o.actions[0].id.clone();
        // It hangs up before the answer: no CallUp, no CallDown.
        let o = feed(
            &mut s,
            &format!(
                "Event: Hangup\nChannel: PJSIP/702-00000002\nUniqueid: 1.2\n\n\
                 Response: Success\nActionID: {again}\nValue: [2001:db8::7]:5060\n\n\
                 Event: Hangup\nChannel: PJSIP/701-00000000\nUniqueid: 1.0\n\n"
            ),
        );
        assert_eq!(o.updates, vec![Update::CallDown { id: "1.0".into() }]);
    }

    #[test]
    fn no_contacts_found_is_an_empty_list() {
        // What Asterisk 22 really answers when nothing is registered.
        let (mut s, actions) = Session::start();
        let o = feed(
            &mut s,
            &format!(
                "Event: ContactStatus\nURI: sip:702@203.0.113.20:5104\nContactStatus: Created\nAOR: 702\nEndpointName: 702\n\n\
                 Response: Error\nActionID: {}\nMessage: No Contacts found\n\n",
                actions[0].id
            ),
        );
        assert!(o.problems.is_empty(), "{:?}", o.problems);
        assert!(matches!(&o.updates[..], [Update::Contacts(l), Update::Contact(_)] if l.is_empty()));
    }

    #[test]
    fn refused_resync_and_malformed_events_are_problems_not_failures() {
        let (mut s, actions) = Session::start();
        let o = feed(
            &mut s,
            &format!(
                "Response: Error\nActionID: {}\nMessage: Permission denied\n\n\
                 Event: InvalidPassword\nRemoteAddress: IPV4/UDP/not-an-ip/5060\n\n\
                 Event: Hangup\n\n",
                actions[0].id
            ),
        );
        assert_eq!(o.problems.len(), 3, "{:?}", o.problems);
        assert!(o.problems[0].contains("Permission denied"));
        assert!(o.updates.is_empty());
    }
}

#[cfg(test)]
mod fuzz {
    //! Property test: any sequence of events and responses, even ones that answer actions never
    //! sent or answer them twice, moves the session on without a panic.
    use super::*;
    use proptest::prelude::*;

    fn message() -> impl Strategy<Value = Message> {
        let event = prop::sample::select(vec![
            "ContactStatus",
            "ContactList",
            "ContactListComplete",
            "CoreShowChannel",
            "CoreShowChannelsComplete",
            "Newchannel",
            "Newstate",
            "Hangup",
            "InvalidPassword",
            "FullyBooted",
            "Shutdown",
        ]);
        let id = prop_oneof![
            (1u32..12).prop_map(|n| format!("pk-contacts-{n}")),
            (1u32..12).prop_map(|n| format!("pk-channels-{n}")),
            (1u32..12).prop_map(|n| format!("pk-getvar-{n}")),
            "[a-z0-9-]{0,8}",
        ];
        let fields = (
            prop_oneof![
                event.prop_map(|e| ("Event", e.to_string())),
                prop::sample::select(vec!["Success", "Error", "Goodbye"])
                    .prop_map(|r| ("Response", r.to_string()))
            ],
            proptest::option::of(id),
            proptest::option::of(prop::sample::select(vec!["Complete", "start"])),
            proptest::option::of(0u8..4),
            proptest::option::of(prop::sample::select(vec!["6", "4"])),
            proptest::option::of(prop::sample::select(vec![
                "203.0.113.7:5060",
                "[2001:db8::7]:5060",
                "nonsense",
                "",
            ])),
        );
        fields.prop_map(|(head, id, list, chan, state, value)| {
            let mut f = vec![(head.0.to_string(), head.1)];
            if let Some(id) = id {
                f.push(("ActionID".into(), id));
            }
            if let Some(l) = list {
                f.push(("EventList".into(), l.into()));
            }
            if let Some(c) = chan {
                f.push(("Channel".into(), format!("PJSIP/70{c}-0000")));
                f.push(("Uniqueid".into(), format!("170.{c}")));
            }
            if let Some(s) = state {
                f.push(("ChannelState".into(), s.into()));
            }
            if let Some(v) = value {
                f.push(("Value".into(), v.into()));
                f.push(("URI".into(), format!("sip:701@{v}")));
                f.push(("Uri".into(), format!("sip:701@{v}")));
                f.push(("EndpointName".into(), "701".into()));
                f.push(("Endpoint".into(), "701".into()));
                f.push(("ContactStatus".into(), "Reachable".into()));
                f.push(("RemoteAddress".into(), format!("IPV4/UDP/{v}/5060")));
            }
            Message { fields: f }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn any_sequence_is_taken_without_panic(msgs in proptest::collection::vec(message(), 0..40)) {
            let (mut s, _) = Session::start();
            for m in &msgs {
                let _ = s.on_message(m);
            }
        }
    }
}
