//! `passknock knock-profile add`: a new knock profile — random ports, or a secret from the OS
//! random source — printed as the daemon's config snippet and the client's.

use std::io::Write;
use std::path::PathBuf;

use knockd::{Mode, Port, PortRange, Proto};

use super::{CliError, KnockProfileAction};
use crate::config::{self, Config};
use crate::duration::{human, Ttl};

/// Static ports and rotating ranges are drawn from here: above the well-known ports, below
/// Linux's ephemeral range (32768–60999), so a knock port is never a reply's port.
const DRAW_FROM: (u16, u16) = (1024, 32767);
/// Ports in a generated rotating range.
const ROTATING_RANGE: u16 = 1000;
const STATIC_LENGTH: usize = 4;

pub fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "static" => Ok(Mode::Static),
        "rotating" => Ok(Mode::Rotating),
        "spa" => Ok(Mode::Spa),
        _ => Err("write static, rotating or spa".into()),
    }
}

pub fn run(action: KnockProfileAction, config: &Config, out: &mut impl Write) -> Result<(), CliError> {
    let KnockProfileAction::Add {
        name,
        mode,
        services,
        ttl,
        length,
        secret_file,
    } = action;
    let refuse = |m: String| Err(CliError::Refused(m));
    if config.knock.profiles.contains_key(&name) {
        return refuse(format!("the config already has a knock profile `{name}`"));
    }
    for s in &services {
        if !config.services.contains_key(s) {
            return refuse(format!(
                "unknown service `{s}`; the config defines: {}",
                config.services.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    if let Some(t) = ttl {
        if t > config.grants.ttl_max {
            return refuse(format!(
                "TTL {t} is above grants.ttl-max ({})",
                config.grants.ttl_max
            ));
        }
    }
    // Ports a new profile must keep off: every protected port and every existing knock port.
    let mut taken: Vec<config::PortRange> = config.services.values().flat_map(|s| s.ports.clone()).collect();
    taken.extend(config.knock.ports());
    let free = |p: Proto, first: u16, last: u16| {
        let r = to_config_range(p, first, last);
        !taken.iter().any(|t| t.overlaps(&r))
    };
    let mut server = vec![format!("mode = \"{}\"", mode.name())];
    let mut client = vec![format!("mode = \"{}\"", mode.name())];
    let mut secret_note = None;
    match mode {
        Mode::Static => {
            let n = length.unwrap_or(STATIC_LENGTH);
            if !(knockd::profile::SEQUENCE_MIN..=knockd::profile::SEQUENCE_MAX).contains(&n) {
                return refuse(format!(
                    "--length must be from {} to {}",
                    knockd::profile::SEQUENCE_MIN,
                    knockd::profile::SEQUENCE_MAX
                ));
            }
            let mut ports: Vec<Port> = Vec::new();
            while ports.len() < n {
                let r = random_u32()?;
                let proto = if r & 1 == 0 { Proto::Tcp } else { Proto::Udp };
                let port = DRAW_FROM.0 + ((r >> 1) % (DRAW_FROM.1 - DRAW_FROM.0 + 1) as u32) as u16;
                let p = Port { proto, port };
                if free(proto, port, port) && !ports.iter().any(|q| q.port == port) {
                    ports.push(p);
                }
            }
            let list = ports
                .iter()
                .map(|p| format!("\"{p}\""))
                .collect::<Vec<_>>()
                .join(", ");
            server.push(format!("ports = [{list}]"));
            client.push(format!("ports = [{list}]"));
        }
        Mode::Rotating | Mode::Spa => {
            let secret = knockd::Secret::generate()?;
            let path =
                secret_file.unwrap_or_else(|| PathBuf::from(format!("/etc/passknock/knock-{name}.secret")));
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            knockd::secret::write_private(&path, &format!("{}\n", secret.to_hex())).map_err(|e| {
                CliError::Refused(format!("cannot write the secret to {}: {e}", path.display()))
            })?;
            secret_note = Some(path.clone());
            server.push(format!("secret-file = \"{}\"", path.display()));
            client.push(format!("secret = \"{}\"", secret.to_hex()));
            if mode == Mode::Rotating {
                let n = length.unwrap_or(knockd::profile::ROTATING_LENGTH);
                let mut range = None;
                for _ in 0..1000 {
                    let span = (DRAW_FROM.1 - DRAW_FROM.0 - ROTATING_RANGE) as u32;
                    let first = DRAW_FROM.0 + (random_u32()? % span) as u16;
                    let last = first + ROTATING_RANGE - 1;
                    if free(Proto::Udp, first, last) {
                        range = Some(PortRange {
                            proto: Proto::Udp,
                            first,
                            last,
                        });
                        break;
                    }
                }
                let Some(range) = range else {
                    return refuse("no free range of 1000 UDP ports below 32768".into());
                };
                for lines in [&mut server, &mut client] {
                    lines.push(format!("range = \"{range}\""));
                    lines.push(format!("length = {n}"));
                    lines.push(format!(
                        "step = \"{}s\"",
                        knockd::profile::ROTATING_STEP.as_secs()
                    ));
                }
            } else {
                let port = (knockd::profile::SPA_PORT..=u16::MAX)
                    .find(|p| free(Proto::Udp, *p, *p))
                    .ok_or_else(|| CliError::Refused("no free UDP port for SPA".into()))?;
                server.push(format!("port = {port}"));
                client.push(format!("port = {port}"));
            }
        }
    }
    let (svcs, ttl_text) = (
        if services.is_empty() {
            config.default_services()
        } else {
            services.clone()
        },
        ttl.map(exact),
    );
    if !services.is_empty() {
        let list = services
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ");
        server.push(format!("services = [{list}]"));
    }
    if let Some(t) = &ttl_text {
        server.push(format!("ttl = \"{t}\""));
    }
    // The client checks access by connecting to a TCP port the knock opens.
    let probe = svcs
        .iter()
        .filter_map(|s| config.services.get(s))
        .flat_map(|s| s.ports.iter())
        .find(|p| p.proto == config::Proto::Tcp)
        .map(|p| format!("tcp/{}", p.first));
    match &probe {
        Some(p) => client.push(format!("probe = \"{p}\"")),
        None => client.push(
            "# probe = \"tcp/PORT\"   # no TCP port among the services; add one to verify access".into(),
        ),
    }
    writeln!(
        out,
        "# Server: add to the daemon's config ({}), then restart passknockd.",
        crate::defaults::CONFIG_PATH
    )?;
    if let Some(p) = &secret_note {
        writeln!(
            out,
            "# The secret is in {} (mode 0600); the client snippet holds it too.",
            p.display()
        )?;
    }
    writeln!(
        out,
        "# Knock ports look closed to everyone: make sure no other service listens on them."
    )?;
    writeln!(out, "[knock.profiles.{name}]")?;
    for l in &server {
        writeln!(out, "{l}")?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "# Client: add to ~/.config/passknock/client.toml on the laptop{}, then: passknock knock PBX --profile {name}",
        if secret_note.is_some() {
            " and chmod 600 it (it holds the secret)"
        } else {
            ""
        }
    )?;
    writeln!(out, "[profiles.{name}]")?;
    for l in &client {
        writeln!(out, "{l}")?;
    }
    Ok(())
}

fn to_config_range(p: Proto, first: u16, last: u16) -> config::PortRange {
    config::PortRange {
        proto: match p {
            Proto::Tcp => config::Proto::Tcp,
            Proto::Udp => config::Proto::Udp,
        },
        first,
        last,
    }
}

/// A TTL written so it reads back the same: `2h`, or whole seconds when two units would lose some.
fn exact(t: Ttl) -> String {
    let h = human(t.0);
    if h.parse::<Ttl>().ok() == Some(t) {
        h
    } else {
        format!("{}s", t.0.as_secs())
    }
}

fn random_u32() -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    knockd::os_random(&mut b)?;
    Ok(u32::from_le_bytes(b))
}
