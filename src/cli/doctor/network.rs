//! The network checks: the FastAGI port answers, and every port Asterisk listens on is in a service.

use std::net::{IpAddr, SocketAddr, TcpStream};

use super::asterisk::{Asterisk, Listening};
use super::{fail, ok, skip, warn, Check, TIMEOUT};
use crate::config::{Config, PortRange, Proto};

/// Where Asterisk must connect: the listen address, with an unspecified one read as loopback.
fn agi_connect(listen: SocketAddr) -> SocketAddr {
    let mut a = listen;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
            SocketAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        });
    }
    a
}

pub(super) fn agi_target(listen: SocketAddr) -> String {
    format!("agi://{}/", agi_connect(listen))
}

pub(super) fn fastagi(config: &Config) -> Check {
    if !config.disa.enabled {
        return skip("fastagi", "DISA is off");
    }
    let to = agi_connect(config.agi.listen);
    match TcpStream::connect_timeout(&to, TIMEOUT) {
        Ok(_) => ok("fastagi", format!("{to} accepts connections")),
        Err(e) => fail(
            "fastagi",
            format!("cannot connect to the FastAGI listener {to}: {e}; DISA callers hear \"not in service\""),
            format!(
                "start passknockd with [disa] enabled = true and [agi] listen = \"{}\"; \
                 nothing else may hold that port",
                config.agi.listen
            ),
        ),
    }
}

/// Every non-loopback socket Asterisk listens on must be in some service: one that is not is open
/// to the whole Internet. A single service port nothing listens on is a typo or a transport left
/// unconfigured.
pub(super) fn ports(config: &Config, asterisk: Option<&Asterisk>) -> Check {
    let Some(asterisk) = asterisk else {
        return fail(
            "ports",
            "no Asterisk is running in this network namespace",
            "start Asterisk (systemctl start asterisk), then run the doctor again",
        );
    };
    let listening = match asterisk.listening() {
        Ok(l) => l,
        Err(e) => return fail("ports", e, "run the doctor as root"),
    };
    let protected: Vec<(String, PortRange)> = config
        .services
        .iter()
        .flat_map(|(name, s)| s.ports.iter().map(move |p| (name.clone(), *p)))
        .collect();
    let covered = |l: &Listening| {
        protected
            .iter()
            .any(|(_, p)| p.proto == l.proto && (p.first..=p.last).contains(&l.port))
    };
    // UDP sockets the kernel bound to an ephemeral port are Asterisk's own outgoing ones (DNS,
    // STUN, …): nothing is served there.
    let ephemeral = ephemeral_ports();
    let outgoing = |l: &Listening| l.proto == Proto::Udp && ephemeral.contains(&l.port);
    let open: Vec<String> = listening
        .iter()
        .filter(|l| !l.address.is_loopback() && !covered(l) && !outgoing(l))
        .map(|l| l.to_string())
        .collect();
    let idle: Vec<String> = protected
        .iter()
        .filter(|(_, p)| p.first == p.last)
        .filter(|(_, p)| !listening.iter().any(|l| l.proto == p.proto && l.port == p.first))
        .map(|(name, p)| format!("{p} ({name})"))
        .collect();
    let public = listening
        .iter()
        .filter(|l| !l.address.is_loopback() && (covered(l) || !outgoing(l)))
        .count();
    if !open.is_empty() {
        let first = open[0].split(" on ").next().unwrap_or("").to_string();
        return fail(
            "ports",
            format!(
                "Asterisk (pid {}) listens on {}, which no service covers: anyone can reach it",
                asterisk.pid,
                open.join(", ")
            ),
            format!(
                "add them to a service's ports in the config, e.g. ports = [..., \"{first}\"] under \
                 [services.sip], then `passknock reload`"
            ),
        );
    }
    if !idle.is_empty() {
        return warn(
            "ports",
            format!(
                "all {public} port(s) Asterisk listens on are protected, but nothing listens on {}",
                idle.join(", ")
            ),
            "remove them from the services, or configure the transport in Asterisk",
        );
    }
    ok(
        "ports",
        format!(
            "all {public} port(s) Asterisk (pid {}) listens on are protected",
            asterisk.pid
        ),
    )
}

/// The kernel's range for automatically bound ports, in this network namespace.
fn ephemeral_ports() -> std::ops::RangeInclusive<u16> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = text.split_whitespace().filter_map(|p| p.parse::<u16>().ok());
    match (it.next(), it.next()) {
        (Some(a), Some(b)) => a..=b,
        _ => 32768..=60999,
    }
}
