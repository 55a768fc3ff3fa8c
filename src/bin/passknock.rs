//! `passknock`: the admin CLI.

use clap::Parser;

fn main() {
    let cli = passknock::cli::Cli::parse();
    let mut out = passknock::cli::Output::new(std::io::stdout().lock());
    let result = cli.run(&mut out);
    match out.failed() {
        // The reader stopped reading (`passknock list | head -1`): what it wanted, it has.
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Some(e) => {
            eprintln!("passknock: cannot write to standard output: {e}");
            std::process::exit(1);
        }
        None => {}
    }
    if let Err(e) = result {
        eprintln!("passknock: {e}");
        std::process::exit(1);
    }
}
