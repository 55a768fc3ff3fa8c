//! `passknock-knock`: the laptop's knock client on its own — the same code as `passknock knock`,
//! with none of the daemon — so it builds for macOS and Windows too:
//! `cargo build --release -p knockd --bin passknock-knock`.

use clap::Parser;
use knockd::client::{knock, KnockArgs};

#[derive(Debug, Parser)]
#[command(
    name = "passknock-knock",
    version,
    about = "Knock on a passknock PBX with a profile from the client config, then check access opened"
)]
struct Args {
    #[command(flatten)]
    knock: KnockArgs,
}

fn main() {
    let req = Args::parse().knock.request();
    if let Err(e) = knock(&req, &mut std::io::stdout().lock()) {
        eprintln!("passknock-knock: {e}");
        std::process::exit(1);
    }
}
