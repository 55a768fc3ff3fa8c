//! The one answer an SPA sender may ask for: sent once the PBX sees the profile's phone
//! register from the opened address (or "not yet" when the wait ends, or at once when the
//! profile names no phone), from the SPA port back to the sender's port. Only an authenticated,
//! granted packet gets one, and one datagram no larger than the packet: never a reflector or an
//! amplifier.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use knockd::gate::AnswerTo;
use knockd::spa::{self, Answer, Said};
use tokio::sync::Semaphore;
use tracing::{debug, info};

use crate::base::clock::{now_ms, UnixMs};
use crate::rules::contacts::Contacts;

/// Answers waiting for a phone at once; past it, the answer says what is known at once.
pub const AT_ONCE: usize = 64;
/// How long the daemon waits for the phone before it answers "not yet".
pub const WAIT: Duration = knockd::profile::ANSWER_WAIT_MAX;

/// What the knock opened.
#[derive(Clone, Copy, Debug)]
pub struct Opened {
    pub address: IpAddr,
    pub also: Option<IpAddr>,
    pub end: UnixMs,
}

/// Answers on a task of its own; the knock listener goes on at once.
pub fn spawn(
    to: AnswerTo,
    opened: Opened,
    endpoint: Option<String>,
    contacts: Contacts,
    slots: Arc<Semaphore>,
) {
    tokio::spawn(async move {
        let said = match &endpoint {
            None => Said::Open,
            Some(e) => match slots.try_acquire_owned() {
                Ok(_permit) => {
                    if registered(&contacts, e, opened, WAIT).await {
                        Said::PhoneConnected
                    } else {
                        Said::PhoneNotYet
                    }
                }
                Err(_) => {
                    if registered(&contacts, e, opened, Duration::ZERO).await {
                        Said::PhoneConnected
                    } else {
                        Said::PhoneNotYet
                    }
                }
            },
        };
        let left = ((opened.end - now_ms()).max(0) / 1000).min(u32::MAX as i64) as u32;
        let answer = Answer {
            said,
            address: opened.address,
            left_secs: left,
        };
        let bytes = spa::seal_answer(&to.key, &to.nonce, &answer);
        match send(to.from, to.to, &bytes) {
            Ok(()) => {
                if let Some(e) = &endpoint {
                    info!(
                        "knock answer to {}: phone {e} {}",
                        to.to,
                        if said == Said::PhoneConnected {
                            "is connected"
                        } else {
                            "did not register in time"
                        }
                    );
                }
            }
            Err(e) => debug!("knock answer to {} not sent: {e}", to.to),
        }
    });
}

/// Whether `endpoint` registers from the opened address (either one, for dual stack).
async fn registered(contacts: &Contacts, endpoint: &str, opened: Opened, wait: Duration) -> bool {
    match opened.also {
        None => contacts.wait_registered(endpoint, opened.address, wait).await,
        Some(also) => {
            tokio::select! {
                true = contacts.wait_registered(endpoint, opened.address, wait) => true,
                true = contacts.wait_registered(endpoint, also, wait) => true,
                else => false,
            }
        }
    }
}

/// One datagram from the address and port the knock was sent to, so it matches the sender's
/// flow through any NAT. The port is shared with answers in flight (SO_REUSEPORT); the table
/// drops what arrives on it, so the socket never receives anything.
fn send(from: SocketAddr, to: SocketAddr, bytes: &[u8]) -> std::io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(from), Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    #[cfg(unix)]
    sock.set_reuse_port(true)?;
    if from.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.bind(&from.into())?;
    sock.send_to(bytes, &to.into())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use knockd::KnockSecret;
    use std::net::UdpSocket;

    fn ticket(client: &UdpSocket) -> (AnswerTo, knockd::spa::SpaKey) {
        let key = knockd::spa::SpaKey::derive(&KnockSecret::from_bytes(&[3u8; 32]));
        // The "SPA port": any free one on loopback.
        let from = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        (
            AnswerTo {
                to: client.local_addr().unwrap(),
                from,
                key: key.clone(),
                nonce: [5u8; 16],
            },
            key,
        )
    }

    #[tokio::test]
    async fn the_answer_comes_once_the_phone_registers_from_the_opened_address() {
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (to, key) = ticket(&client);
        let contacts = Contacts::default();
        let a: IpAddr = "203.0.113.10".parse().unwrap();
        let opened = Opened {
            address: a,
            also: Some("2001:db8::10".parse().unwrap()),
            end: now_ms() + 3_600_000,
        };
        spawn(
            to,
            opened,
            Some("701".into()),
            contacts.clone(),
            Arc::new(Semaphore::new(1)),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Another address is not this phone; the IPv6 half of a dual-stack knock is.
        contacts.add("701", "198.51.100.50".parse().unwrap());
        contacts.add("701", "2001:db8::10".parse().unwrap());
        let got = tokio::task::spawn_blocking(move || {
            client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 200];
            let (n, _) = client.recv_from(&mut buf).unwrap();
            buf[..n].to_vec()
        })
        .await
        .unwrap();
        assert_eq!(got.len(), spa::LEN);
        let answer = spa::open_answer(&key, &[5u8; 16], &got).unwrap();
        assert_eq!(answer.said, Said::PhoneConnected);
        assert_eq!(answer.address, a);
        assert!((3590..=3600).contains(&answer.left_secs));
    }

    #[tokio::test]
    async fn without_a_named_phone_the_answer_is_at_once() {
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (to, key) = ticket(&client);
        let opened = Opened {
            address: "203.0.113.10".parse().unwrap(),
            also: None,
            end: now_ms() + 60_000,
        };
        spawn(to, opened, None, Contacts::default(), Arc::new(Semaphore::new(1)));
        let got = tokio::task::spawn_blocking(move || {
            client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 200];
            let (n, _) = client.recv_from(&mut buf).unwrap();
            buf[..n].to_vec()
        })
        .await
        .unwrap();
        assert_eq!(spa::open_answer(&key, &[5u8; 16], &got).unwrap().said, Said::Open);
    }
}
