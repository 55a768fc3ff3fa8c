//! `passknockd`'s command line. It lives in the library, not the binary, so that the manual page
//! (examples/dist-gen.rs) is generated from the very definition the daemon parses.

use std::path::PathBuf;

use clap::Parser;

use crate::daemon::logs::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "passknockd",
    version,
    about = "The passknock daemon: grants, bans and the nftables table"
)]
pub struct DaemonArgs {
    /// Config file. Without it: /etc/passknock/passknock.toml if present, else the embedded example.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Check the config and exit.
    #[arg(long)]
    pub check: bool,
    /// How log lines on stderr look: `text` (under systemd, with the priority prefix the
    /// journal reads, and no timestamp) or `json` (one object a line, for log shippers).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}
