//! The single-packet-authorization datagram. Fixed length; length, magic and version are checked,
//! then the HMAC in constant time, and only then is any other field read.
//!
//! # Format
//!
//! ```text
//! offset size field
//!      0    2 magic "PK"
//!      2    1 version (1)
//!      3    1 request: low bits say which address to open — 0 = the packet's source,
//!               4 = this IPv4 instead, 6 = this IPv6 instead, 0x14 / 0x16 = the source *and*
//!               this IPv4 / IPv6 (dual stack: the other family's address); bit 0x80 asks
//!               for one answer (below)
//!      4    4 key id, big-endian (from the profile secret; picks the profile)
//!      8    8 timestamp, Unix seconds, big-endian
//!     16   16 random nonce
//!     32   16 requested address (IPv4 in the first 4 bytes), zeros when 0 above
//!     48   32 HMAC-SHA256 over bytes 0..48, keyed by a key derived from the secret
//! ```
//!
//! Version 1 is kept: a version-1 client's packets (request 0, 4 or 6) mean what they always
//! did; a daemon older than the dual-stack and answer bits refuses a packet with them (an
//! unknown request byte), so such a client sees access not open rather than half of it.
//!
//! The answer, sent by the daemon only for a packet that verified and was granted, once, from
//! the port it was sent to back to the port it came from: as long as the request, so never an
//! amplifier, and never sent for a packet that did not verify, so never a reflector.
//!
//! ```text
//! offset size field
//!      0    2 magic "PK"
//!      2    1 version (1)
//!      3    1 kind: 0x81 access open, 0x82 open and the phone registered from it, 0x83 open
//!               and the phone did not register within the wait
//!      4    4 key id
//!      8   16 the request's nonce (an answer is good for one request only)
//!     24   16 the address the daemon opened, as it saw the packet's source
//!     40    1 that address's family: 4 or 6
//!     41    3 zeros
//!     44    4 seconds the grant has left, big-endian
//!     48   32 HMAC-SHA256 over bytes 0..48, keyed by another key derived from the secret
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::KnockSecret;

pub const LEN: usize = 80;
pub const MAGIC: [u8; 2] = *b"PK";
pub const VERSION: u8 = 1;
const SIGNED: usize = 48;

/// Request bits: the carried address comes besides the source (dual stack).
const ALSO: u8 = 0x10;
/// Request bit: answer once.
const ANSWER: u8 = 0x80;

/// Keys derived from a profile secret: the MAC key, the answer's MAC key and the public key id.
#[derive(Clone, Debug)]
pub struct SpaKey {
    pub id: u32,
    mac: KnockSecret,
    answer: KnockSecret,
}

impl SpaKey {
    pub fn derive(secret: &KnockSecret) -> SpaKey {
        let mac = derive(secret, b"passknock spa mac v1");
        let answer = derive(secret, b"passknock spa answer v1");
        let id = derive(secret, b"passknock spa key id v1");
        SpaKey {
            id: u32::from_be_bytes([id.expose()[0], id.expose()[1], id.expose()[2], id.expose()[3]]),
            mac,
            answer,
        }
    }

    fn tag(&self, signed: &[u8]) -> [u8; 32] {
        tag_with(&self.mac, signed)
    }
}

fn tag_with(key: &KnockSecret, signed: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key.expose()).expect("HMAC takes any key length");
    m.update(signed);
    m.finalize().into_bytes().into()
}

fn derive(secret: &KnockSecret, label: &[u8]) -> KnockSecret {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.expose()).expect("HMAC takes any key length");
    m.update(label);
    KnockSecret::from_bytes(&m.finalize().into_bytes())
}

/// Which address an SPA asks to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requested {
    /// Whatever address the packet arrives from (through NAT, the laptop rarely knows its own).
    Source,
    /// This address instead of the source (the profile's `allow-address`).
    Address(IpAddr),
    /// The source and this address of the other family (the profile's `dual-stack`).
    Also(IpAddr),
}

/// The fields of an SPA datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spa {
    pub key_id: u32,
    pub timestamp: u64,
    pub nonce: [u8; 16],
    pub requested: Requested,
    /// Whether the sender waits for one answer.
    pub answer: bool,
}

impl Spa {
    /// A new request stamped `unix_secs`, with a fresh nonce from the OS random source.
    pub fn new(key: &SpaKey, unix_secs: u64, requested: Requested) -> std::io::Result<Spa> {
        let mut nonce = [0u8; 16];
        crate::os_random(&mut nonce)?;
        Ok(Spa {
            key_id: key.id,
            timestamp: unix_secs,
            nonce,
            requested,
            answer: false,
        })
    }

    /// The replay-cache key: one per key and nonce.
    pub fn replay_key(&self) -> String {
        let hex: String = self.nonce.iter().map(|b| format!("{b:02x}")).collect();
        format!("spa:{:08x}:{hex}", self.key_id)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpaError {
    #[error("not {LEN} bytes long")]
    Length,
    #[error("not an SPA datagram of version {VERSION}")]
    Version,
    #[error("an unknown key id")]
    UnknownKey,
    #[error("a tag that does not verify")]
    Tag,
    #[error("a malformed requested address")]
    Address,
}

/// Writes the datagram for `spa` under `key`.
pub fn seal(key: &SpaKey, spa: &Spa) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[0..2].copy_from_slice(&MAGIC);
    b[2] = VERSION;
    b[4..8].copy_from_slice(&spa.key_id.to_be_bytes());
    b[8..16].copy_from_slice(&spa.timestamp.to_be_bytes());
    b[16..32].copy_from_slice(&spa.nonce);
    let (kind, address) = match spa.requested {
        Requested::Source => (0, None),
        Requested::Address(a) => (0, Some(a)),
        Requested::Also(a) => (ALSO, Some(a)),
    };
    b[3] = kind;
    match address {
        None => {}
        Some(IpAddr::V4(a)) => {
            b[3] |= 4;
            b[32..36].copy_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            b[3] |= 6;
            b[32..48].copy_from_slice(&a.octets());
        }
    }
    if spa.answer {
        b[3] |= ANSWER;
    }
    let tag = key.tag(&b[..SIGNED]);
    b[SIGNED..].copy_from_slice(&tag);
    b
}

/// The key id of a datagram that has the right length, magic and version — the only field read
/// before the tag is checked, to pick the key to check it with.
pub fn key_id(b: &[u8]) -> Result<u32, SpaError> {
    if b.len() != LEN {
        return Err(SpaError::Length);
    }
    if b[0..2] != MAGIC || b[2] != VERSION {
        return Err(SpaError::Version);
    }
    Ok(u32::from_be_bytes([b[4], b[5], b[6], b[7]]))
}

/// Verifies the tag (constant time) and only then reads the fields.
pub fn open(key: &SpaKey, b: &[u8]) -> Result<Spa, SpaError> {
    if key_id(b)? != key.id {
        return Err(SpaError::UnknownKey);
    }
    let want = key.tag(&b[..SIGNED]);
    if !bool::from(want.ct_eq(&b[SIGNED..])) {
        return Err(SpaError::Tag);
    }
    let zero = |r: std::ops::Range<usize>| b[r].iter().all(|x| *x == 0);
    let v4 = || IpAddr::V4(Ipv4Addr::new(b[32], b[33], b[34], b[35]));
    let v6 = || IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&b[32..48]).unwrap()));
    let requested = match b[3] & !ANSWER {
        0 if zero(32..48) => Requested::Source,
        4 if zero(36..48) => Requested::Address(v4()),
        6 => Requested::Address(v6()),
        0x14 if zero(36..48) => Requested::Also(v4()),
        0x16 => Requested::Also(v6()),
        _ => return Err(SpaError::Address),
    };
    Ok(Spa {
        key_id: key.id,
        timestamp: u64::from_be_bytes(b[8..16].try_into().unwrap()),
        nonce: b[16..32].try_into().unwrap(),
        requested,
        answer: b[3] & ANSWER != 0,
    })
}

/// What an answer says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Said {
    /// Access is open (the profile names no phone to wait for).
    Open,
    /// Access is open and the phone registered from the opened address.
    PhoneConnected,
    /// Access is open; the phone did not register within the wait.
    PhoneNotYet,
}

/// The daemon's one answer to a granted request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub said: Said,
    /// The address opened, as the daemon saw the packet's source (behind NAT, the public one).
    pub address: IpAddr,
    /// Seconds the grant has left.
    pub left_secs: u32,
}

/// Writes the answer to the request with `nonce`.
pub fn seal_answer(key: &SpaKey, nonce: &[u8; 16], answer: &Answer) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[0..2].copy_from_slice(&MAGIC);
    b[2] = VERSION;
    b[3] = match answer.said {
        Said::Open => 0x81,
        Said::PhoneConnected => 0x82,
        Said::PhoneNotYet => 0x83,
    };
    b[4..8].copy_from_slice(&key.id.to_be_bytes());
    b[8..24].copy_from_slice(nonce);
    match answer.address {
        IpAddr::V4(a) => {
            b[24..28].copy_from_slice(&a.octets());
            b[40] = 4;
        }
        IpAddr::V6(a) => {
            b[24..40].copy_from_slice(&a.octets());
            b[40] = 6;
        }
    }
    b[44..48].copy_from_slice(&answer.left_secs.to_be_bytes());
    let tag = tag_with(&key.answer, &b[..SIGNED]);
    b[SIGNED..].copy_from_slice(&tag);
    b
}

/// Opens an answer to the request with `nonce`: anything else (another request's answer, a
/// forgery, junk) is an error.
pub fn open_answer(key: &SpaKey, nonce: &[u8; 16], b: &[u8]) -> Result<Answer, SpaError> {
    if b.len() != LEN {
        return Err(SpaError::Length);
    }
    if b[0..2] != MAGIC || b[2] != VERSION || !(0x81..=0x83).contains(&b[3]) {
        return Err(SpaError::Version);
    }
    if b[4..8] != key.id.to_be_bytes() {
        return Err(SpaError::UnknownKey);
    }
    let want = tag_with(&key.answer, &b[..SIGNED]);
    if !bool::from(want.ct_eq(&b[SIGNED..])) || b[8..24] != nonce[..] {
        return Err(SpaError::Tag);
    }
    let address = match b[40] {
        4 => IpAddr::V4(Ipv4Addr::new(b[24], b[25], b[26], b[27])),
        6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&b[24..40]).unwrap())),
        _ => return Err(SpaError::Address),
    };
    Ok(Answer {
        said: match b[3] {
            0x81 => Said::Open,
            0x82 => Said::PhoneConnected,
            _ => Said::PhoneNotYet,
        },
        address,
        left_secs: u32::from_be_bytes(b[44..48].try_into().unwrap()),
    })
}

/// How a verified datagram's timestamp compares with the server's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Age {
    Fresh,
    /// Older than the window by this much.
    Aged(Duration),
    /// Ahead of the server's clock by more than the window.
    Future(Duration),
}

/// Whether `timestamp` (Unix seconds) is within `max_age` of `now_ms`, either way.
pub fn age(timestamp: u64, now_ms: i64, max_age: Duration) -> Age {
    // i128: a forged-but-authenticated timestamp near u64::MAX must not overflow anything.
    let ts_ms = timestamp as i128 * 1000;
    let now = now_ms as i128;
    let window = max_age.as_millis() as i128;
    let ms = |v: i128| Duration::from_millis(v.clamp(0, u64::MAX as i128) as u64);
    // The timestamp has whole seconds: allow the second it names.
    if ts_ms + 1000 + window < now {
        Age::Aged(ms(now - ts_ms - window))
    } else if ts_ms - window > now {
        Age::Future(ms(ts_ms - window - now))
    } else {
        Age::Fresh
    }
}

/// Until when (Unix ms) a nonce stamped `timestamp` must be remembered: past that, its packet
/// is refused as aged anyway.
pub fn remember_until(timestamp: u64, max_age: Duration) -> i64 {
    let until = timestamp as i128 * 1000 + 1000 + max_age.as_millis() as i128 + 1000;
    until.min(i64::MAX as i128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SpaKey {
        SpaKey::derive(&KnockSecret::from_bytes(&[9u8; 32]))
    }

    #[test]
    fn seal_open_round_trip_for_each_address_kind() {
        let k = key();
        for req in [
            Requested::Source,
            Requested::Address("203.0.113.7".parse().unwrap()),
            Requested::Address("2001:db8::7".parse().unwrap()),
            Requested::Also("203.0.113.7".parse().unwrap()),
            Requested::Also("2001:db8::7".parse().unwrap()),
        ] {
            for answer in [false, true] {
                let spa = Spa {
                    answer,
                    ..Spa::new(&k, 1_800_000_000, req).unwrap()
                };
                let b = seal(&k, &spa);
                assert_eq!(key_id(&b), Ok(k.id));
                assert_eq!(open(&k, &b), Ok(spa));
            }
        }
    }

    #[test]
    fn a_version_one_packet_of_an_older_client_still_opens() {
        // Written by hand as the first clients wrote it: request byte 4, an IPv4 address.
        let k = key();
        let mut b = [0u8; LEN];
        b[0..3].copy_from_slice(b"PK\x01");
        b[3] = 4;
        b[4..8].copy_from_slice(&k.id.to_be_bytes());
        b[8..16].copy_from_slice(&1_800_000_000u64.to_be_bytes());
        b[32..36].copy_from_slice(&[203, 0, 113, 7]);
        let t = k.tag(&b[..SIGNED]);
        b[SIGNED..].copy_from_slice(&t);
        let spa = open(&k, &b).unwrap();
        assert_eq!(spa.requested, Requested::Address("203.0.113.7".parse().unwrap()));
        assert!(!spa.answer);
    }

    #[test]
    fn answers_open_only_for_their_request_and_key() {
        let k = key();
        let nonce = [7u8; 16];
        for (said, address) in [
            (Said::Open, "203.0.113.7"),
            (Said::PhoneConnected, "2001:db8::7"),
            (Said::PhoneNotYet, "198.51.100.3"),
        ] {
            let a = Answer {
                said,
                address: address.parse().unwrap(),
                left_secs: 3600,
            };
            let b = seal_answer(&k, &nonce, &a);
            assert_eq!(b.len(), LEN, "no larger than the request");
            assert_eq!(open_answer(&k, &nonce, &b), Ok(a));
            assert_eq!(open_answer(&k, &[8u8; 16], &b), Err(SpaError::Tag));
            let other = SpaKey::derive(&KnockSecret::from_bytes(&[1u8; 32]));
            assert!(open_answer(&other, &nonce, &b).is_err());
            for i in 0..LEN {
                let mut f = b;
                f[i] ^= 0x10;
                assert!(open_answer(&k, &nonce, &f).is_err(), "byte {i}");
            }
            // An answer is never a request, nor a request an answer.
            assert!(open(&k, &b).is_err());
            let req = seal(&k, &Spa::new(&k, 1_800_000_000, Requested::Source).unwrap());
            assert!(open_answer(&k, &nonce, &req).is_err());
        }
    }

    #[test]
    fn any_changed_bit_or_length_is_refused() {
        let k = key();
        let b = seal(&k, &Spa::new(&k, 1_800_000_000, Requested::Source).unwrap());
        for i in 0..LEN {
            for bit in [0x01, 0x80] {
                let mut f = b;
                f[i] ^= bit;
                assert!(open(&k, &f).is_err(), "byte {i} bit {bit:#x} flipped");
            }
        }
        assert_eq!(open(&k, &b[..LEN - 1]), Err(SpaError::Length));
        let mut long = b.to_vec();
        long.push(0);
        assert_eq!(open(&k, &long), Err(SpaError::Length));
        let other = SpaKey::derive(&KnockSecret::from_bytes(&[1u8; 32]));
        assert_eq!(open(&other, &b), Err(SpaError::UnknownKey));
        // Same key id, different MAC key: a forgery that guessed the id.
        let forged = SpaKey {
            id: k.id,
            mac: KnockSecret::from_bytes(&[2u8; 32]),
            answer: KnockSecret::from_bytes(&[2u8; 32]),
        };
        let f = seal(
            &forged,
            &Spa::new(&forged, 1_800_000_000, Requested::Source).unwrap(),
        );
        assert_eq!(open(&k, &f), Err(SpaError::Tag));
    }

    #[test]
    fn age_window_both_ways() {
        let w = Duration::from_secs(60);
        let now = 1_800_000_000_000;
        assert_eq!(age(1_800_000_000, now, w), Age::Fresh);
        assert_eq!(age(1_800_000_000 - 60, now, w), Age::Fresh);
        assert!(matches!(age(1_800_000_000 - 62, now, w), Age::Aged(_)));
        assert_eq!(age(1_800_000_000 + 60, now, w), Age::Fresh);
        assert!(matches!(age(1_800_000_000 + 61, now, w), Age::Future(_)));
        assert!(remember_until(1_800_000_000, w) > now + 60_000);
        assert!(matches!(age(u64::MAX, now, w), Age::Future(_)));
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests: any datagram is refused or opened without a panic; what is sealed opens to
    //! itself; no change to a sealed datagram opens.
    use super::*;
    use proptest::prelude::*;

    fn key() -> SpaKey {
        SpaKey::derive(&KnockSecret::from_bytes(&[9u8; 32]))
    }

    fn requested() -> impl Strategy<Value = Requested> {
        prop_oneof![
            Just(Requested::Source),
            any::<[u8; 4]>().prop_map(|a| Requested::Address(IpAddr::from(a))),
            any::<[u8; 16]>().prop_map(|a| Requested::Address(IpAddr::from(a))),
            any::<[u8; 4]>().prop_map(|a| Requested::Also(IpAddr::from(a))),
            any::<[u8; 16]>().prop_map(|a| Requested::Also(IpAddr::from(a))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_bytes_are_refused_without_panic(b in proptest::collection::vec(any::<u8>(), 0..2 * LEN)) {
            let k = key();
            let _ = key_id(&b);
            // Forging a tag by chance is 2^-256: anything not sealed is refused.
            prop_assert!(open(&k, &b).is_err());
        }

        #[test]
        fn right_header_wrong_tag_is_refused(body in any::<[u8; LEN - 8]>()) {
            let k = key();
            let mut b = [0u8; LEN];
            b[0..2].copy_from_slice(&MAGIC);
            b[2] = VERSION;
            b[3] = body[0];
            b[4..8].copy_from_slice(&k.id.to_be_bytes());
            b[8..].copy_from_slice(&body[..LEN - 8]);
            prop_assert_eq!(open(&k, &b), Err(SpaError::Tag));
        }

        #[test]
        fn sealed_opens_to_itself_and_any_change_is_refused(
            timestamp in any::<u64>(),
            nonce in any::<[u8; 16]>(),
            requested in requested(),
            answer in any::<bool>(),
            at in 0..LEN,
            bit in 0..8u8,
        ) {
            let k = key();
            let spa = Spa { key_id: k.id, timestamp, nonce, requested, answer };
            let b = seal(&k, &spa);
            prop_assert_eq!(open(&k, &b), Ok(spa));
            let mut f = b;
            f[at] ^= 1 << bit;
            prop_assert!(open(&k, &f).is_err());
            let _ = age(timestamp, i64::MAX, Duration::from_secs(u64::MAX / 2000));
            let _ = remember_until(timestamp, Duration::MAX);
        }
    }
}
