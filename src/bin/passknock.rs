//! `passknock`: the admin CLI.

use clap::Parser;

fn main() {
    let cli = passknock::cli::Cli::parse();
    let mut out = std::io::stdout().lock();
    if let Err(e) = cli.run(&mut out) {
        eprintln!("passknock: {e}");
        std::process::exit(1);
    }
}
