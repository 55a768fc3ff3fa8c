//! What the running Asterisk is, as the kernel sees it: its process in this network namespace,
//! the sockets it listens on, and the manager.conf it loaded (through its own root, so a chrooted
//! Asterisk is read as it sees itself).

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::config::Proto;

/// The Asterisk daemon process (not a remote console) in our network namespace.
#[derive(Clone, Debug)]
pub struct Asterisk {
    pub pid: u32,
    args: Vec<String>,
}

/// A socket Asterisk listens on (TCP in LISTEN, or any bound UDP socket).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listening {
    pub proto: Proto,
    pub address: IpAddr,
    pub port: u16,
}

impl std::fmt::Display for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} on {}", self.proto.name(), self.port, self.address)
    }
}

fn netns(pid: &str) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/ns/net")).ok()
}

impl Asterisk {
    /// The lowest-numbered `asterisk` process in this network namespace that is not a remote
    /// console (`-r`, `-R`, `-x`).
    pub fn find() -> Option<Asterisk> {
        let ours = netns("self")?;
        let mut found: Vec<Asterisk> = fs::read_dir("/proc")
            .ok()?
            .flatten()
            .filter_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                if comm.trim_end() != "asterisk" || netns(&pid.to_string())? != ours {
                    return None;
                }
                let args: Vec<String> = fs::read(format!("/proc/{pid}/cmdline"))
                    .ok()?
                    .split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                let console = args.iter().skip(1).any(|a| {
                    a.starts_with('-')
                        && !a.starts_with("--")
                        && a[1..].chars().any(|c| matches!(c, 'r' | 'R' | 'x'))
                });
                (!console).then_some(Asterisk { pid, args })
            })
            .collect();
        found.sort_by_key(|a| a.pid);
        found.into_iter().next()
    }

    /// A path as this process sees it (through its root, for a chrooted Asterisk).
    fn inside(&self, path: &str) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.pid)).join(path.trim_start_matches('/'))
    }

    /// `-C FILE`, else the compiled-in default.
    fn asterisk_conf(&self) -> String {
        let mut it = self.args.iter();
        while let Some(a) = it.next() {
            if a == "-C" {
                if let Some(f) = it.next() {
                    return f.clone();
                }
            } else if let Some(f) = a.strip_prefix("-C") {
                return f.to_string();
            }
        }
        "/etc/asterisk/asterisk.conf".into()
    }

    /// The directory Asterisk reads its configs from, as the process sees it.
    pub fn etc_dir(&self) -> String {
        let conf = fs::read_to_string(self.inside(&self.asterisk_conf())).unwrap_or_default();
        ini_values(&conf, "directories", "astetcdir")
            .pop()
            .unwrap_or_else(|| "/etc/asterisk".into())
    }

    /// manager.conf as Asterisk reads it, with its `#include`s inlined; and its path as Asterisk
    /// names it.
    pub fn manager_conf(&self) -> Result<(String, PathBuf), String> {
        let etc = self.etc_dir();
        let name = format!("{etc}/manager.conf");
        let text = fs::read_to_string(self.inside(&name)).map_err(|e| format!("cannot read {name}: {e}"))?;
        let mut out = String::new();
        for line in text.lines() {
            match line.trim().strip_prefix("#include") {
                Some(inc) => {
                    let inc = inc.trim().trim_matches(|c| c == '"' || c == '<' || c == '>');
                    let full = if inc.starts_with('/') {
                        inc.to_string()
                    } else {
                        format!("{etc}/{inc}")
                    };
                    out.push_str(&fs::read_to_string(self.inside(&full)).unwrap_or_default());
                    out.push('\n');
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        Ok((out, name.into()))
    }

    /// Every socket the process listens on, loopback ones included.
    pub fn listening(&self) -> Result<Vec<Listening>, String> {
        let fd_dir = format!("/proc/{}/fd", self.pid);
        let inodes: std::collections::HashSet<u64> = fs::read_dir(&fd_dir)
            .map_err(|e| format!("cannot read {fd_dir}: {e}"))?
            .flatten()
            .filter_map(|e| {
                let l = fs::read_link(e.path()).ok()?;
                let l = l.to_str()?;
                l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
            })
            .collect();
        let mut out = Vec::new();
        for (file, proto) in [
            ("tcp", Proto::Tcp),
            ("tcp6", Proto::Tcp),
            ("udp", Proto::Udp),
            ("udp6", Proto::Udp),
        ] {
            let text = fs::read_to_string(format!("/proc/{}/net/{file}", self.pid)).unwrap_or_default();
            out.extend(
                parse_proc_net(&text, proto)
                    .into_iter()
                    .filter(|(_, inode)| inodes.contains(inode))
                    .map(|(l, _)| l),
            );
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// `/proc/net/{tcp,udp}[6]` rows → listening sockets and their inodes. TCP rows count only in
/// LISTEN; UDP rows count when bound to a port.
pub fn parse_proc_net(text: &str, proto: Proto) -> Vec<(Listening, u64)> {
    const TCP_LISTEN: &str = "0A";
    text.lines()
        .skip(1)
        .filter_map(|row| {
            let f: Vec<&str> = row.split_whitespace().collect();
            let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
            if proto == Proto::Tcp && *state != TCP_LISTEN {
                return None;
            }
            let (addr, port) = local.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok().filter(|p| *p != 0)?;
            let address = hex_addr(addr)?;
            Some((Listening { proto, address, port }, inode.parse().ok()?))
        })
        .collect()
}

/// The kernel prints addresses as 32-bit words in host order (little-endian here).
fn hex_addr(hex: &str) -> Option<IpAddr> {
    let words: Option<Vec<u32>> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect();
    let bytes: Vec<u8> = words?.iter().flat_map(|w| w.to_le_bytes()).collect();
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
        16 => {
            let b: [u8; 16] = bytes.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// Values of `key` in `[section]` of an Asterisk-style config (`key = v` or `key => v`; `;`
/// comments; a section header may carry `(template)` or `(!)`).
pub fn ini_values(text: &str, section: &str, key: &str) -> Vec<String> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split(';').next().unwrap_or("").trim();
        if let Some(rest) = line.strip_prefix('[') {
            inside = rest.split(']').next().is_some_and(|s| s.trim() == section);
            continue;
        }
        if !inside {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.trim() == key {
            out.push(v.trim_start_matches('>').trim().to_string());
        }
    }
    out
}

/// The permission classes a manager user has for `read` or `write`, lower-cased.
pub fn manager_classes(manager_conf: &str, user: &str, which: &str) -> Option<Vec<String>> {
    let values = ini_values(manager_conf, user, which);
    if values.is_empty()
        && !manager_conf
            .lines()
            .any(|l| l.trim().starts_with(&format!("[{user}]")))
    {
        return None;
    }
    Some(
        values
            .iter()
            .flat_map(|v| v.split(','))
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_rows_are_read() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:13BE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:13BE 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 100 0 0 10 0\n";
        let got = parse_proc_net(tcp, Proto::Tcp);
        assert_eq!(got.len(), 1, "only the LISTEN row");
        assert_eq!(got[0].0.address, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(got[0].0.port, 5054);
        assert_eq!(got[0].1, 4242);
        let udp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  1: 000080FE00000000FF1100AA01000000:13C4 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 77 2 0000000000000000 0\n";
        let got = parse_proc_net(udp6, Proto::Udp);
        assert_eq!(got[0].0.address, "fe80::aa00:11ff:0:1".parse::<IpAddr>().unwrap());
        assert_eq!(got[0].0.port, 5060);
    }

    #[test]
    fn manager_classes_are_collected_across_lines_and_templates() {
        let conf = "[general]\nenabled = yes\n\n[passknock](!)\nsecret = x ; not this\nread = system,Security\nread => call\nwrite = system\n[other]\nread = all\n";
        assert_eq!(
            manager_classes(conf, "passknock", "read").unwrap(),
            vec!["system", "security", "call"]
        );
        assert_eq!(
            manager_classes(conf, "passknock", "write").unwrap(),
            vec!["system"]
        );
        assert_eq!(manager_classes(conf, "nobody", "read"), None);
    }
}
