//! `passknock-knock`: the laptop's knock client on its own — the same code as `passknock knock`,
//! with none of the daemon — so it builds for macOS and Windows too:
//! `cargo build --release -p knockd --bin passknock-knock`.

use clap::Parser;
use knockd::client::{knock, KnockCli};

fn main() {
    let req = KnockCli::parse().knock.request();
    if let Err(e) = knock(&req, &mut std::io::stdout().lock()) {
        eprintln!("passknock-knock: {e}");
        std::process::exit(1);
    }
}
