//! `passknock knock-profile add`: a new knock profile — random ports, or a secret from the OS
//! random source — printed as the daemon's config snippet and the client's.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

use knockd::{Mode, Port, PortRange, Proto};

use super::{CliError, KnockProfileAction};
use crate::base::duration::{human, Ttl};
use crate::config::{self, Config};

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

/// Ports a socket on this host is bound to: TCP listening, UDP bound, IPv4 and IPv6. A knock
/// port there would make that service look closed to everyone, since the table drops knocks.
#[derive(Debug, Default)]
pub struct Busy {
    tcp: BTreeSet<u16>,
    udp: BTreeSet<u16>,
}

impl Busy {
    /// This host's sockets, from `/proc/net` (this network namespace's, as the daemon sees them).
    pub fn local() -> Busy {
        let mut busy = Busy::default();
        for (file, proto) in [
            ("tcp", Proto::Tcp),
            ("tcp6", Proto::Tcp),
            ("udp", Proto::Udp),
            ("udp6", Proto::Udp),
        ] {
            let text = std::fs::read_to_string(format!("/proc/net/{file}")).unwrap_or_default();
            for (l, _) in crate::cli::doctor::asterisk::parse_proc_net(&text, proto) {
                busy.insert(proto, l.port);
            }
        }
        busy
    }

    pub fn insert(&mut self, proto: Proto, port: u16) {
        match proto {
            Proto::Tcp => self.tcp.insert(port),
            Proto::Udp => self.udp.insert(port),
        };
    }

    /// Whether any port of `first..=last` is bound for `proto`.
    fn any(&self, proto: Proto, first: u16, last: u16) -> bool {
        let set = match proto {
            Proto::Tcp => &self.tcp,
            Proto::Udp => &self.udp,
        };
        set.range(first..=last).next().is_some()
    }
}

pub fn run(action: KnockProfileAction, config: &Config, out: &mut impl Write) -> Result<(), CliError> {
    add(action, config, &Busy::local(), out)
}

/// `run` with the host's busy ports given, so tests choose them.
fn add(
    action: KnockProfileAction,
    config: &Config,
    busy: &Busy,
    out: &mut impl Write,
) -> Result<(), CliError> {
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
    // A port is drawn only if neither the config nor a local socket has it.
    let free = |p: Proto, first: u16, last: u16| {
        let r = to_config_range(p, first, last);
        !taken.iter().any(|t| t.overlaps(&r)) && !busy.any(p, first, last)
    };
    let mut server = vec![format!("mode = \"{}\"", mode.name())];
    let mut client = vec![format!("mode = \"{}\"", mode.name())];
    let mut secret_note = None;
    let mut knock_client = None;
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
            // Drawn from the free ones only, so a busy port is never picked and the draw ends.
            let mut candidates: Vec<Port> = (DRAW_FROM.0..=DRAW_FROM.1)
                .flat_map(|port| [Proto::Tcp, Proto::Udp].map(|proto| Port { proto, port }))
                .filter(|p| free(p.proto, p.port, p.port))
                .collect();
            let mut ports: Vec<Port> = Vec::new();
            while ports.len() < n {
                if candidates.is_empty() {
                    return refuse(format!(
                        "fewer than {n} free ports from {} to {}",
                        DRAW_FROM.0, DRAW_FROM.1
                    ));
                }
                let p = candidates.swap_remove(pick(candidates.len())?);
                // One port number once in a sequence, whichever the protocol.
                candidates.retain(|q| q.port != p.port);
                ports.push(p);
            }
            let list = ports
                .iter()
                .map(|p| format!("\"{p}\""))
                .collect::<Vec<_>>()
                .join(", ");
            server.push(format!("ports = [{list}]"));
            client.push(format!("ports = [{list}]"));
            knock_client = Some(knock_command(&ports));
        }
        Mode::Rotating | Mode::Spa => {
            let secret = knockd::KnockSecret::generate()?;
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
                let firsts: Vec<u16> = (DRAW_FROM.0..=DRAW_FROM.1 - ROTATING_RANGE + 1)
                    .filter(|f| free(Proto::Udp, *f, f + ROTATING_RANGE - 1))
                    .collect();
                if firsts.is_empty() {
                    return refuse(format!(
                        "no free range of {ROTATING_RANGE} UDP ports from {} to {}",
                        DRAW_FROM.0, DRAW_FROM.1
                    ));
                }
                let first = firsts[pick(firsts.len())?];
                let range = PortRange {
                    proto: Proto::Udp,
                    first,
                    last: first + ROTATING_RANGE - 1,
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
    // `--keep` knocks again after 2/3 of the grant's time: the client needs to know it.
    let client_ttl = ttl_text
        .clone()
        .unwrap_or_else(|| exact(config.grants.ttl_default));
    client.push(format!("ttl = \"{client_ttl}\""));
    // A reload swaps profiles into the running knock listener; only a daemon with no profile
    // yet has no listener to take them, and starts one at its next start.
    let then = if config.knock.profiles.is_empty() {
        "then restart passknockd: the knock listener starts with the first profile (later ones \
         need only `passknock reload`)"
    } else {
        "then run `passknock reload`"
    };
    writeln!(
        out,
        "# Server: add to the daemon's config ({}), {then}.",
        crate::base::defaults::CONFIG_PATH
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
        "# No socket on this host listens on these ports; as knock ports they look closed to everyone."
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
    if let Some(line) = knock_client {
        writeln!(out)?;
        writeln!(
            out,
            "# Or with the standard knock client (Debian's knockd package), or a phone app, same order:"
        )?;
        writeln!(out, "#   {line}")?;
    }
    Ok(())
}

/// The standard `knock` client's command line for a static sequence: `PORT:PROTO` each, in order.
fn knock_command(ports: &[Port]) -> String {
    let seq: Vec<String> = ports
        .iter()
        .map(|p| format!("{}:{}", p.port, p.proto.name()))
        .collect();
    format!("knock -v PBX {}", seq.join(" "))
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

/// An index below `len` from the OS random source. `len` is at most a few tens of thousands, so
/// the modulo's bias (below 2^-16) does not matter.
fn pick(len: usize) -> std::io::Result<usize> {
    Ok(random_u32()? as usize % len)
}

fn random_u32() -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    knockd::os_random(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(name: &str, mode: Mode, secret_file: Option<PathBuf>) -> KnockProfileAction {
        KnockProfileAction::Add {
            name: name.into(),
            mode,
            services: Vec::new(),
            ttl: None,
            length: None,
            secret_file,
        }
    }

    fn add(config: &Config, name: &str) -> String {
        let mut out = Vec::new();
        run(action(name, Mode::Static, None), config, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// `add` with `busy` as the host's sockets; returns the server snippet's profile.
    fn add_beside(busy: &Busy, mode: Mode, secret: Option<PathBuf>) -> Result<toml::Value, CliError> {
        let config = Config::parse("[services.sip]\nports = [\"udp/5060\", \"tcp/5060\"]\n", "t").unwrap();
        let mut out = Vec::new();
        super::add(action("p", mode, secret), &config, busy, &mut out)?;
        let text = String::from_utf8(out).unwrap();
        let snippet: toml::Value = toml::from_str(&text).unwrap();
        Ok(snippet["knock"]["profiles"]["p"].clone())
    }

    /// Every port from `DRAW_FROM` bound, both protocols, but `free`.
    fn all_busy_but(free: &[(Proto, u16)]) -> Busy {
        let mut busy = Busy::default();
        for port in DRAW_FROM.0..=DRAW_FROM.1 {
            for proto in [Proto::Tcp, Proto::Udp] {
                if !free.contains(&(proto, port)) {
                    busy.insert(proto, port);
                }
            }
        }
        busy
    }

    #[test]
    fn ports_a_local_socket_holds_are_never_drawn() {
        let free = [
            (Proto::Tcp, 2000),
            (Proto::Udp, 3000),
            (Proto::Udp, 4000),
            (Proto::Tcp, 30000),
        ];
        for _ in 0..5 {
            let p = add_beside(&all_busy_but(&free), Mode::Static, None).unwrap();
            let mut got: Vec<String> = p["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            got.sort();
            assert_eq!(got, ["tcp/2000", "tcp/30000", "udp/3000", "udp/4000"]);
        }
        // Three free ports for a sequence of four: refused, not drawn forever.
        let e = add_beside(&all_busy_but(&free[..3]), Mode::Static, None).unwrap_err();
        assert!(e.to_string().contains("fewer than 4 free ports"), "{e}");

        // Rotating: the only range of UDP ports with no socket in it.
        let dir = tempfile::tempdir().unwrap();
        let range: Vec<(Proto, u16)> = (20000..20000 + ROTATING_RANGE).map(|p| (Proto::Udp, p)).collect();
        let p = add_beside(
            &all_busy_but(&range),
            Mode::Rotating,
            Some(dir.path().join("r.secret")),
        )
        .unwrap();
        assert_eq!(p["range"].as_str(), Some("udp/20000-20999"));

        // SPA: the usual port is bound, so the next free one.
        let mut busy = Busy::default();
        busy.insert(Proto::Udp, knockd::profile::SPA_PORT);
        busy.insert(Proto::Tcp, knockd::profile::SPA_PORT + 1);
        let p = add_beside(&busy, Mode::Spa, Some(dir.path().join("s.secret"))).unwrap();
        assert_eq!(
            p["port"].as_integer(),
            Some(knockd::profile::SPA_PORT as i64 + 1),
            "a TCP socket does not hold a UDP port"
        );
    }

    #[test]
    fn a_static_profile_prints_the_knock_clients_command_line() {
        let config = Config::parse("[services.sip]\nports = [\"udp/5060\", \"tcp/5060\"]\n", "t").unwrap();
        let free = [
            (Proto::Tcp, 7000),
            (Proto::Udp, 8000),
            (Proto::Tcp, 9000),
            (Proto::Udp, 7500),
        ];
        let mut out = Vec::new();
        super::add(
            action("laptop", Mode::Static, None),
            &config,
            &all_busy_but(&free),
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let snippet: toml::Value = toml::from_str(&text).unwrap();
        let ports: Vec<&str> = snippet["profiles"]["laptop"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("#   knock -v PBX "))
            .unwrap_or_else(|| panic!("no knock command line in:\n{text}"));
        // The same ports, in the profile's order, written as knock(1) takes them.
        let want: Vec<String> = ports
            .iter()
            .map(|p| {
                let (proto, port) = p.split_once('/').unwrap();
                format!("{port}:{proto}")
            })
            .collect();
        assert_eq!(line.split(' ').collect::<Vec<_>>(), want, "{text}");
        let mut sorted = want.clone();
        sorted.sort();
        assert_eq!(sorted, ["7000:tcp", "7500:udp", "8000:udp", "9000:tcp"]);
        // Rotating and SPA sequences are no fixed list: no knock line.
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        super::add(
            action("spa", Mode::Spa, Some(dir.path().join("s.secret"))),
            &config,
            &Busy::default(),
            &mut out,
        )
        .unwrap();
        assert!(!String::from_utf8(out).unwrap().contains("knock -v"));
    }

    #[test]
    fn this_hosts_sockets_are_seen() {
        let tcp = std::net::TcpListener::bind("[::]:0").unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let busy = Busy::local();
        let (t, u) = (tcp.local_addr().unwrap().port(), udp.local_addr().unwrap().port());
        assert!(busy.any(Proto::Tcp, t, t) && busy.any(Proto::Udp, u, u));
    }

    #[test]
    fn the_snippet_says_reload_and_restart_only_for_a_first_profile() {
        let base = "[services.sip]\nports = [\"udp/5060\", \"tcp/5060\"]\n";
        let with_one = Config::parse(
            &format!(
                "{base}[knock.profiles.laptop]\nmode = \"static\"\nports = [\"tcp/7000\", \"udp/8000\"]\n"
            ),
            "t",
        )
        .unwrap();
        let text = add(&with_one, "phone");
        assert!(
            text.contains("then run `passknock reload`") && !text.contains("restart"),
            "{text}"
        );
        // The knock listener starts with the daemon's first profile.
        let text = add(&Config::parse(base, "t").unwrap(), "phone");
        assert!(
            text.contains("restart passknockd") && text.contains("passknock reload"),
            "{text}"
        );
    }
}
