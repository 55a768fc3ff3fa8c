//! The command line as clap reads it: global options, the commands and their arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::{knock, paint};
use crate::base::duration::Ttl;

#[derive(Debug, Parser)]
#[command(
    name = "passknock",
    version,
    about = "Let road warriors into an Asterisk PBX that is closed to the Internet"
)]
pub struct Cli {
    /// The daemon's control socket.
    #[arg(long, env = "PASSKNOCK_SOCKET", global = true)]
    pub socket: Option<PathBuf>,
    /// Read the control socket's path from this daemon config.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Allow ADDR to reach some services for a while.
    Grant {
        address: String,
        /// Comma-separated services (default: the config's default-services).
        #[arg(long, value_delimiter = ',')]
        services: Vec<String>,
        /// How long, e.g. 90m, 2h, 1d (default: the config's grants.ttl-default).
        #[arg(long)]
        ttl: Option<Ttl>,
        /// Why, for the audit log and `list`.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// End every grant for ADDR now.
    Revoke { address: String },
    /// Show live grants and bans.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Keep ADDR off every protected port for a while.
    Ban {
        address: String,
        #[arg(long)]
        ttl: Option<Ttl>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lift the ban on ADDR.
    Unban { address: String },
    /// One screen: table and AMI health, counts now, in the last hour and day, live grants, bans and
    /// contacts.
    Status {
        /// One JSON object for scripts: status, last hour, grants, bans, AMI, contacts, calls.
        #[arg(long)]
        json: bool,
        /// Colour: auto (on a terminal, unless NO_COLOR is set), always or never.
        #[arg(long, value_enum, default_value_t = paint::ColorChoice::Auto)]
        color: paint::ColorChoice,
    },
    /// Audit events from the daemon's history, newest last: grants, bans, lockouts, refusals,
    /// knocks, calls. Kept across restarts for daemon.history-retention.
    Log {
        /// How far back, e.g. 1h, 24h, 7d.
        #[arg(long, default_value = "24h")]
        since: Ttl,
        /// Only events about this address.
        #[arg(long)]
        address: Option<std::net::IpAddr>,
        /// Only events of this DISA account or knock profile (or `uid 0`, `ami`, a number).
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Counts of grants, bans and refusals, top refused sources, grants per account, bans,
    /// lockouts and suspensions: plain text to mail from cron.
    Report {
        /// How far back, e.g. 24h, 7d.
        #[arg(long, default_value = "24h")]
        since: Ttl,
        #[arg(long)]
        json: bool,
    },
    /// Registered phones (endpoint and address) as Asterisk reports them over AMI.
    Contacts {
        #[arg(long)]
        json: bool,
    },
    /// Live SIP calls and their remote addresses, as Asterisk reports them over AMI.
    Calls {
        #[arg(long)]
        json: bool,
    },
    /// Addresses the table dropped REGISTERs (or INVITEs) from, by account endpoint, lately.
    Attempts {
        #[arg(long)]
        json: bool,
    },
    /// Knock on HOST with a profile from this laptop's client config, then check access opened.
    Knock(knockd::client::KnockArgs),
    /// Make knock profiles (for the daemon's config and the laptop's).
    KnockProfile {
        #[command(subcommand)]
        action: KnockProfileAction,
    },
    /// Re-read the daemon's config file (as SIGHUP does); a bad config is refused, nothing changes.
    Reload,
    /// Standing entries: addresses, networks or DNS names always let into some services, until
    /// removed (`allow NAME ADDR|CIDR|FQDN... --services sip,iax`, `allow list`, `allow remove NAME`).
    Allow(AllowArgs),
    /// DISA accounts: who may phone in with a passcode.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Check the installation — nft and the table, config and secret files, AMI and its
    /// permissions, the dialplan, FastAGI, the ports Asterisk listens on, your own address — and
    /// say what to fix. Exits 1 if a check fails.
    Doctor {
        #[arg(long)]
        json: bool,
        /// Your address, to check you are not locked out [default: from SSH_CONNECTION].
        #[arg(long)]
        address: Option<std::net::IpAddr>,
        #[arg(long, value_enum, default_value_t = paint::ColorChoice::Auto)]
        color: paint::ColorChoice,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create an account and print its new passcode, once.
    Add {
        name: String,
        /// Services a call opens (default: the config's default-services).
        #[arg(long, value_delimiter = ',')]
        services: Vec<String>,
        /// How long a call's grant lasts (default: grants.ttl-default).
        #[arg(long)]
        ttl: Option<Ttl>,
        /// The PJSIP endpoint whose registered address may be granted.
        #[arg(long)]
        endpoint: Option<String>,
        /// Where the granted address comes from, in order: attempted, source, registered, keyed
        /// (the default: all four in this order; attempted needs --endpoint).
        #[arg(long, value_delimiter = ',')]
        address_modes: Vec<String>,
        /// Numbers the owner calls from: still let through (passcode still required) while
        /// passcode entry is suspended for everyone else after a flood of wrong passcodes.
        #[arg(long, value_delimiter = ',')]
        callers: Vec<String>,
        /// Keep a grant per address: a call from a new address adds one beside the account's
        /// others instead of replacing them.
        #[arg(long)]
        keep_several: bool,
    },
    /// Set the numbers an account's owner calls from (none given: clear them).
    Callers {
        name: String,
        #[arg(value_delimiter = ',')]
        numbers: Vec<String>,
    },
    /// List accounts (never passcodes: they are not stored).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Give an account a new passcode, printed once; the old one stops working.
    ResetPasscode {
        name: String,
    },
    /// Stop an account's passcode from working, keeping the account.
    Disable {
        name: String,
    },
    Enable {
        name: String,
    },
    Remove {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KnockProfileAction {
    /// Generate a profile — random ports, or a secret from the OS random source — and print the
    /// daemon's config snippet and the client's.
    Add {
        name: String,
        /// static, rotating or spa.
        #[arg(long, value_parser = knock::parse_mode)]
        mode: knockd::Mode,
        /// Comma-separated services a knock opens [default: the config's default-services].
        #[arg(long, value_delimiter = ',')]
        services: Vec<String>,
        /// How long a knock opens them [default: the config's grants.ttl-default].
        #[arg(long)]
        ttl: Option<Ttl>,
        /// Ports in a sequence (static, rotating) [default: 4].
        #[arg(long)]
        length: Option<usize>,
        /// Where to write the secret (rotating, spa) [default: /etc/passknock/knock-NAME.secret].
        #[arg(long)]
        secret_file: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct AllowArgs {
    #[command(subcommand)]
    pub action: Option<AllowAction>,
    /// The entry's name, like a Travelin' Man 3 account.
    #[arg(required = true)]
    pub name: Option<String>,
    /// Addresses, networks (ADDRESS/PREFIX) or DNS names (followed as they move).
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// Comma-separated services it opens (default: the config's default-services).
    #[arg(long, value_delimiter = ',')]
    pub services: Vec<String>,
    /// Why, for `allow list` and the audit log.
    #[arg(long, default_value = "")]
    pub note: String,
}

#[derive(Debug, Subcommand)]
pub enum AllowAction {
    /// Every standing entry, and what each DNS name stands for now.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a standing entry: what it let in is closed at once.
    Remove { name: String },
}
