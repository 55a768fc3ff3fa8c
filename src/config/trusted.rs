//! `firewall.trusted` as written (networks and DNS names mixed), and the providers' lists of
//! `firewall.trusted-files`: one network or name a line, `#` comments, each file a list named
//! after it (`providers.d/voipco.list` is `voipco`), checked at load with the file and line of
//! anything wrong.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::firewall::{ElementPath, FirewallConfig, Shards};
use super::ConfigError;
use crate::base::addr::Net;
use crate::model::Target;

/// `[firewall]` as the TOML has it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawFirewall {
    trusted: Option<Vec<String>>,
    #[serde(default)]
    trusted_files: Vec<String>,
    nft: Option<PathBuf>,
    elements: Option<ElementPath>,
    shards: Option<Shards>,
}

impl TryFrom<RawFirewall> for FirewallConfig {
    type Error = String;

    fn try_from(raw: RawFirewall) -> Result<FirewallConfig, String> {
        let default = FirewallConfig::default();
        let mut out = FirewallConfig {
            trusted: Vec::new(),
            trusted_names: Vec::new(),
            trusted_files: raw.trusted_files,
            trusted_lists: Vec::new(),
            nft: raw.nft.unwrap_or(default.nft),
            elements: raw.elements.unwrap_or(default.elements),
            shards: raw.shards.unwrap_or(default.shards),
        };
        let Some(trusted) = raw.trusted else {
            out.trusted = default.trusted;
            return Ok(out);
        };
        for (i, t) in trusted.iter().enumerate() {
            match t.parse::<Target>() {
                Ok(Target::Net(n)) => out.trusted.push(n),
                Ok(Target::Name(n)) => out.trusted_names.push(n),
                Err(e) => return Err(format!("trusted[{i}]: {e}")),
            }
        }
        out.trusted_names.sort();
        out.trusted_names.dedup();
        Ok(out)
    }
}

/// One providers' list: its name (the file's, without extension), where it is, what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedList {
    pub name: String,
    pub path: PathBuf,
    pub nets: Vec<Net>,
    pub names: Vec<String>,
}

impl FirewallConfig {
    /// Reads every file `trusted-files` matches into `trusted` and `trusted_names`. A pattern
    /// matching no file is fine (an empty drop-in directory); a file with a bad line is not.
    pub fn load_trusted_files(&mut self) -> Result<(), ConfigError> {
        let mut lists = Vec::new();
        for (i, pattern) in self.trusted_files.iter().enumerate() {
            let key = format!("firewall.trusted-files[{i}]");
            for path in expand(pattern).map_err(|message| ConfigError::File {
                key: key.clone(),
                message,
            })? {
                lists.push(read_list(&path).map_err(|message| ConfigError::File {
                    key: key.clone(),
                    message,
                })?);
            }
        }
        for l in &lists {
            self.trusted.extend(l.nets.iter().copied());
            self.trusted_names.extend(l.names.iter().cloned());
        }
        self.trusted.sort();
        self.trusted.dedup();
        self.trusted_names.sort();
        self.trusted_names.dedup();
        self.trusted_lists = lists;
        Ok(())
    }
}

/// The files a pattern names: itself, or with `*` in its last part, every file in that directory
/// the pattern matches, in name order.
fn expand(pattern: &str) -> Result<Vec<PathBuf>, String> {
    let path = Path::new(pattern);
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| format!("`{pattern}` names no file"))?;
    if !file.contains('*') {
        return Ok(vec![path.to_path_buf()]);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    if path.parent().is_some_and(|d| d.to_string_lossy().contains('*')) {
        return Err(format!("`{pattern}`: `*` may only be in the file name"));
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| e.file_name().to_str().is_some_and(|n| matches(file, n)))
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters.
fn matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

fn read_list(path: &Path) -> Result<TrustedList, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut list = TrustedList {
        name,
        path: path.to_path_buf(),
        nets: Vec::new(),
        names: Vec::new(),
    };
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match line.parse::<Target>() {
            Ok(Target::Net(n)) => list.nets.push(n),
            Ok(Target::Name(n)) => list.names.push(n),
            Err(e) => return Err(format!("{}:{}: {e}", path.display(), i + 1)),
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_holds_networks_and_names_and_refuses_garbage_by_index() {
        let base = "[services.sip]\nports = [\"udp/5060\"]\n[firewall]\n";
        let c = crate::config::Config::parse(
            &format!("{base}trusted = [\"10.0.0.0/8\", \"Trunk.Example.NET\"]\n"),
            "t",
        )
        .unwrap();
        assert_eq!(c.firewall.trusted.len(), 1);
        assert_eq!(c.firewall.trusted_names, ["trunk.example.net"]);
        let e = crate::config::Config::parse(&format!("{base}trusted = [\"10.0.0.0/8\", \"a b\"]\n"), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("trusted[1]"), "{e}");
        let d = crate::config::Config::parse(base, "t").unwrap();
        assert_eq!(d.firewall.trusted.len(), 2, "loopback by default");
    }

    #[test]
    fn file_patterns_match_only_their_file_names() {
        assert!(matches("*.list", "voipco.list"));
        assert!(!matches("*.list", "voipco.list.bak"));
        assert!(matches("a*b*c", "a-b-c"));
        assert!(!matches("a*b*c", "ac"));
    }

    #[test]
    fn a_list_names_its_file_and_line_when_a_line_is_bad() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("trunk.list");
        std::fs::write(
            &good,
            "# our trunk\n198.51.100.0/24\nsip.example.net # its name\n\n",
        )
        .unwrap();
        let l = read_list(&good).unwrap();
        assert_eq!(l.name, "trunk");
        assert_eq!(l.nets.len(), 1);
        assert_eq!(l.names, ["sip.example.net"]);
        let bad = dir.path().join("bad.list");
        std::fs::write(&bad, "198.51.100.0/24\n\nnot an address\n").unwrap();
        let e = read_list(&bad).unwrap_err();
        assert!(e.contains("bad.list:3:"), "{e}");
        let mut fw = FirewallConfig {
            trusted_files: vec![format!("{}/*.list", dir.path().display())],
            ..Default::default()
        };
        assert!(fw.load_trusted_files().is_err());
        std::fs::remove_file(&bad).unwrap();
        fw.load_trusted_files().unwrap();
        assert_eq!(fw.trusted_lists.len(), 1);
        assert_eq!(fw.trusted_names, ["sip.example.net"]);
    }
}
