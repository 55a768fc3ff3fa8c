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
