//! A daemon with DISA on, for end-to-end tests that drive real calls: its config, accounts made
//! through the real CLI, and the grants it lists.

use std::path::Path;

use super::daemon::{short_socket, Daemon};

/// The port DISA grants open in these tests. SIP and RTP stay open so the calls themselves work;
/// a real PBX reaches the DISA number through a trusted trunk.
pub const PROBE: u16 = 7070;

/// `[agi]` and `[disa]` for a burst of 500 calls at once (the DISA benches): room for every
/// session to connect before any sends its environment, and failures that never suspend entry.
pub fn burst_sections(dir: &Path) -> String {
    format!(
        r#"
[agi]
max-sessions = 600
max-starting = 1024
max-starting-per-peer = 600

[disa]
enabled = true
key-file = "{}/disa.key"
global-failures-per-hour = 1000
"#,
        dir.display()
    )
}

/// A config with DISA on, grants opening [`PROBE`], the control socket at a short path, and
/// `extra` appended right after the `[disa]` lines (more of them, then more sections, e.g. `[agi]`).
pub fn config(dir: &Path, extra: &str) -> String {
    format!(
        r#"
[daemon]
store = "{dir}/store.db"
control-socket = "{sock}"
reconcile-interval = "1s"

[grants]
ttl-default = "2h"
ttl-max = "24h"
default-services = ["probe"]

[firewall]
trusted = ["127.0.0.0/8", "::1/128"]

[services.probe]
ports = ["udp/{PROBE}", "tcp/{PROBE}"]

[disa]
enabled = true
key-file = "{dir}/disa.key"
tries-per-call = 3
digit-timeout = "5s"
{extra}
"#,
        dir = dir.display(),
        sock = short_socket().display()
    )
}

/// `account add ARGS` through the CLI; returns the passcode it prints once.
pub fn add_account(d: &Daemon, args: &[&str]) -> String {
    let mut a = vec!["account", "add"];
    a.extend_from_slice(args);
    let out = d.ok(&a);
    out.lines()
        .find_map(|l| l.strip_prefix("passcode: "))
        .unwrap_or_else(|| panic!("no passcode printed: {out}"))
        .to_string()
}

/// The live grants, as `list --json` shows them.
pub fn grants(d: &Daemon) -> Vec<serde_json::Value> {
    d.json(&["list"])["grants"].as_array().unwrap().clone()
}

/// The live grants `who` holds (`sip-auth:701`, an account's name).
pub fn grants_of(d: &Daemon, who: &str) -> Vec<serde_json::Value> {
    grants(d).into_iter().filter(|g| g["who"] == who).collect()
}
