//! `--keep`'s thin IO loop: asks the [`Keeper`] what to do, does it (knock, probe, read the
//! interface addresses, sleep in short slices), hands back what happened, and stops on SIGINT
//! or SIGTERM.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::keep::{renew_after, secs, Keeper, Knocked, Next};
use super::{
    answer_line, plan_request, probe, requested_for, send_keeping, source_towards, spa_key, unix_ms,
    wait_answer, ClientError, ClientProfile, KnockRequest, Probe,
};
use crate::profile::ProfileKind;
use crate::{rotating, Proto};

/// Set by SIGINT or SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);
/// The longest sleep between two looks at the stop flag.
const SLICE: Duration = Duration::from_millis(100);
/// A probe while access is open: a dropped SYN within this long means closed.
const PROBE_WAIT: Duration = Duration::from_secs(2);

pub fn run(
    req: &KnockRequest,
    profile: &ClientProfile,
    target: IpAddr,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    if let Some(p) = profile.probe {
        if p.proto != Proto::Tcp {
            return Err(ClientError::Usage(format!(
                "probe {p}: only TCP ports can be probed"
            )));
        }
    }
    on_signals();
    let probe_to = profile
        .probe
        .filter(|_| !req.no_probe)
        .map(|p| SocketAddr::new(target, p.port));
    let ttl = match profile.renew {
        // `renew` is when to knock again: the grant the keeper reckons with is 3/2 of it.
        Some(r) => r * 3 / 2,
        None => profile.ttl,
    };
    writeln!(
        out,
        "keeping access to {target} open with profile {} (knocking again every {}, and when \
         this laptop's addresses change{}); Ctrl-C stops",
        profile.name,
        secs(renew_after(ttl)),
        if probe_to.is_some() {
            " or the probe stops answering"
        } else {
            ""
        }
    )?;
    out.flush()?;
    let mut keeper = Keeper::new(unix_ms(), probe_to.is_some());
    while !STOP.load(Ordering::Relaxed) {
        let now = unix_ms();
        match keeper.poll(now) {
            Next::Knock(why) => {
                writeln!(out, "{why}")?;
                out.flush()?;
                let (how, not_before) = knock_once(req, profile, target, probe_to, ttl, out)?;
                let line = keeper.on_knocked(unix_ms(), how, not_before, jitter());
                writeln!(out, "{line}")?;
            }
            Next::Probe => {
                let open = probe_to.is_some_and(|to| !matches!(probe(to, PROBE_WAIT), Probe::Closed));
                if let Some(line) = keeper.on_probe(unix_ms(), open) {
                    writeln!(out, "{line}")?;
                }
            }
            Next::Watch => keeper.on_addresses(now, local_addresses(target)),
            Next::Wait(until) => {
                let ms = (until - now).clamp(1, SLICE.as_millis() as i64);
                std::thread::sleep(Duration::from_millis(ms as u64));
            }
        }
        out.flush()?;
    }
    writeln!(out, "stopped; access stays open until the last grant ends")?;
    Ok(())
}

/// One knock and its check. A failure to send (no route, the network down) is a failed knock,
/// not the end: the keeper backs off and tries again.
fn knock_once(
    req: &KnockRequest,
    profile: &ClientProfile,
    target: IpAddr,
    probe_to: Option<SocketAddr>,
    ttl: Duration,
    out: &mut impl Write,
) -> Result<(Knocked, i64), ClientError> {
    let now = unix_ms();
    let not_before = match &profile.kind {
        // The same step's sequence works once: the next knock waits for the next step.
        ProfileKind::Rotating(r) => rotating::step_start(rotating::step_at(now, r.step) + 1, r.step),
        _ => now,
    };
    let requested = requested_for(profile, target, out)?;
    let (plan, nonce) = plan_request(profile, target, now, requested, req.wait_phone)?;
    let socket = match send_keeping(&plan) {
        Ok(s) => s,
        Err(e) => return Ok((Knocked::NotOpen(e.to_string()), not_before)),
    };
    let seen_locally = source_towards(target);
    let probed = match probe_to {
        Some(to) => match probe(to, profile.wait) {
            Probe::Closed => {
                return Ok((
                    Knocked::NotOpen(format!(
                        "tcp/{} on {} still drops {}s after the knock",
                        to.port(),
                        to.ip(),
                        profile.wait.as_secs()
                    )),
                    not_before,
                ))
            }
            Probe::Open(t) | Probe::Reached(t) => Some(format!(
                "tcp/{} answered {:.2}s after the knock",
                to.port(),
                t.as_secs_f32()
            )),
        },
        None => None,
    };
    let answer = match (socket, nonce, spa_key(profile)) {
        (Some(sock), Some(nonce), Some(key)) => wait_answer(&sock, &key, &nonce, profile.answer_wait),
        _ => None,
    };
    if let Some(a) = &answer {
        writeln!(out, "{}", answer_line(a))?;
    }
    let left = answer
        .map(|a| Duration::from_secs(a.left_secs as u64))
        .filter(|d| !d.is_zero())
        .unwrap_or(ttl);
    let seen = answer.map(|a| a.address).or(seen_locally);
    Ok((
        match (probed, &answer) {
            (Some(detail), _) => Knocked::Open { seen, left, detail },
            (None, Some(_)) => Knocked::Open {
                seen,
                left,
                detail: "the PBX answered".into(),
            },
            (None, None) => Knocked::Sent { left },
        },
        not_before,
    ))
}

/// The addresses on this laptop's interfaces (loopback and IPv6 link-local left out), and the
/// source it would use towards the PBX: a change in either is a move to another network.
fn local_addresses(target: IpAddr) -> Vec<IpAddr> {
    let mut v = interface_addresses();
    v.extend(source_towards(target));
    v
}

#[cfg(unix)]
fn interface_addresses() -> Vec<IpAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we walk read-only and free once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut at = head;
    while !at.is_null() {
        // SAFETY: `at` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*at };
        at = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and its family says which sockaddr it is.
        let ip = unsafe {
            match (*ifa.ifa_addr).sa_family as i32 {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                }
                _ => continue,
            }
        };
        let link_local = matches!(ip, IpAddr::V6(v) if v.segments()[0] & 0xffc0 == 0xfe80);
        if !ip.is_loopback() && !link_local {
            out.push(ip);
        }
    }
    // SAFETY: the list from getifaddrs above, freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// Elsewhere only the source towards the PBX is watched (and the probe).
#[cfg(not(unix))]
fn interface_addresses() -> Vec<IpAddr> {
    Vec::new()
}

#[cfg(unix)]
fn on_signals() {
    extern "C" fn stop(_: libc::c_int) {
        // Only an atomic store: async-signal-safe.
        STOP.store(true, Ordering::Relaxed);
    }
    let handler = stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// Ctrl-C ends the process as it always does.
#[cfg(not(unix))]
fn on_signals() {}

fn jitter() -> u32 {
    let mut b = [0u8; 4];
    let _ = crate::os_random(&mut b);
    u32::from_be_bytes(b)
}
