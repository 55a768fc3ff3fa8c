//! `passknock-knock`: the laptop's knock client on its own — the same code as `passknock knock`,
//! with none of the daemon — so it builds for macOS and Windows too:
//! `cargo build --release -p knockd --bin passknock-knock`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;
use knockd::client::{knock, KnockRequest};

#[derive(Debug, Parser)]
#[command(
    name = "passknock-knock",
    version,
    about = "Knock on a passknock PBX with a profile from the client config, then check access opened"
)]
struct Args {
    /// The PBX: a name or an address.
    host: String,
    /// The profile in the client config.
    #[arg(long)]
    profile: String,
    /// The client config [default: ~/.config/passknock/client.toml].
    #[arg(long, env = "PASSKNOCK_CLIENT_CONFIG")]
    client_config: Option<PathBuf>,
    /// Print what would be sent, and send nothing.
    #[arg(long)]
    dry_run: bool,
    /// Use HOST's IPv4 address.
    #[arg(short = '4', conflicts_with = "ipv6")]
    ipv4: bool,
    /// Use HOST's IPv6 address.
    #[arg(short = '6')]
    ipv6: bool,
    /// SPA only: open this address rather than the one the packet comes from.
    #[arg(long)]
    address: Option<IpAddr>,
    /// Do not probe for access afterwards.
    #[arg(long)]
    no_probe: bool,
}

fn main() {
    let a = Args::parse();
    let req = KnockRequest {
        host: a.host,
        profile: a.profile,
        config: a.client_config,
        dry_run: a.dry_run,
        family: if a.ipv4 {
            Some(4)
        } else if a.ipv6 {
            Some(6)
        } else {
            None
        },
        address: a.address,
        no_probe: a.no_probe,
    };
    if let Err(e) = knock(&req, &mut std::io::stdout().lock()) {
        eprintln!("passknock-knock: {e}");
        std::process::exit(1);
    }
}
