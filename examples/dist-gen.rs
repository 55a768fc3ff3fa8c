//! Writes the generated parts of the Debian package — manual pages and bash, zsh and fish
//! completions — from the clap definitions the binaries parse, so they cannot drift from them.
//! An example rather than part of a binary: clap_mangen and clap_complete stay out of what ships.
//!
//!     cargo run --example dist-gen -- OUT_DIR
//!
//! writes OUT_DIR/man/*.{1,8} and OUT_DIR/completions/{bash,zsh,fish}/…; `dist/deb/build.sh`
//! installs them. SOURCE_DATE_EPOCH, if set, dates the pages (reproducible builds).

use std::fs;
use std::io::Write;
use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;
use passknock::base::defaults;

/// The sections a page gets beyond what clap describes: the files, signals and related pages an
/// admin looks for in a manual.
fn extra_sections(name: &str) -> String {
    match name {
        "passknockd" => format!(
            r#".SH FILES
.TP
{config}
The config (see \fBpassknock.toml\fR(5)); mode 0600, root's.
.TP
{store}
The store: grants, bans, accounts, passcode tags, lockouts and the audit history (SQLite).
.TP
{socket}
The control socket the admin CLI talks to; mode 0600.
.TP
/lib/systemd/system/passknockd.service
The hardened unit: Type=notify (READY once the table is applied), only CAP_NET_ADMIN.
.SH SIGNALS
.TP
SIGHUP
Re-read the config (as \fBpassknock reload\fR does) and reopen the audit log; a bad config is
refused and nothing changes. Grants and bans are kept.
.TP
SIGTERM, SIGINT
Stop. The nftables table stays: every element carries a kernel timeout of its own, so access
still ends on time.
.SH ENVIRONMENT
.TP
PASSKNOCK_LOG
Log filter for stderr (the journal under systemd), e.g. \fBdebug\fR; default \fBinfo\fR.
.SH SEE ALSO
\fBpassknock\fR(8), \fBpassknock.toml\fR(5), \fBpassknock-knock\fR(1), \fBnft\fR(8),
\fBsystemctl\fR(1)
"#,
            config = defaults::CONFIG_PATH,
            store = defaults::STORE_PATH,
            socket = defaults::CONTROL_SOCKET,
        ),
        "passknock" => format!(
            r#".SH FILES
.TP
{socket}
The daemon's control socket (root only); \fB\-\-socket\fR or \fB\-\-config\fR name another.
.TP
~/.config/passknock/client.toml
The laptop's knock profiles, for \fBpassknock knock\fR; mode 0600.
.SH EXIT STATUS
0 when the daemon did what was asked; 1 when it refused (the reason is printed), could not be
reached, or \fBdoctor\fR found a failed check.
.SH SEE ALSO
\fBpassknockd\fR(8), \fBpassknock.toml\fR(5), \fBpassknock-knock\fR(1), \fBnft\fR(8)
"#,
            socket = defaults::CONTROL_SOCKET,
        ),
        "passknock-knock" => r#".SH FILES
.TP
~/.config/passknock/client.toml
The client config: one [profiles.NAME] table per PBX profile, as
\fBpassknock knock-profile add\fR prints it on the PBX; mode 0600.
.SH EXIT STATUS
0 when access opened (the probe port answered), or with \fB\-\-dry\-run\fR or \fB\-\-no\-probe\fR;
1 otherwise, saying why.
.SH SEE ALSO
\fBpassknock\fR(8), \fBpassknockd\fR(8)
"#
        .to_string(),
        _ => String::new(),
    }
}

/// The date on every page: SOURCE_DATE_EPOCH's day, else none (clap_mangen leaves it empty).
fn page_date() -> Option<String> {
    let secs: i64 = std::env::var("SOURCE_DATE_EPOCH").ok()?.parse().ok()?;
    Some(passknock::base::clock::utc(secs * 1000)[..10].to_string())
}

/// Renders `cmd`'s page in `section`, then one page per subcommand (`passknock-grant(8)`, …),
/// which the parent's SUBCOMMANDS section names.
fn write_pages(cmd: &clap::Command, section: &str, dir: &Path) -> std::io::Result<()> {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
    let mut man = clap_mangen::Man::new(cmd.clone())
        .section(section)
        .manual("passknock")
        .source(format!("passknock {}", env!("CARGO_PKG_VERSION")));
    if let Some(date) = page_date() {
        man = man.date(date);
    }
    let mut page = Vec::new();
    man.render(&mut page)?;
    page.extend_from_slice(extra_sections(&name).as_bytes());
    fs::write(dir.join(format!("{name}.{section}")), page)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, section, dir)?;
    }
    Ok(())
}

fn completions(mut cmd: clap::Command, out: &Path) -> std::io::Result<()> {
    let name = cmd.get_name().to_string();
    for (shell, dir, file) in [
        (Shell::Bash, "bash", name.clone()),
        (Shell::Zsh, "zsh", format!("_{name}")),
        (Shell::Fish, "fish", format!("{name}.fish")),
    ] {
        let dir = out.join("completions").join(dir);
        fs::create_dir_all(&dir)?;
        let mut f = fs::File::create(dir.join(file))?;
        clap_complete::generate(shell, &mut cmd, &name, &mut f);
        f.flush()?;
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: dist-gen OUT_DIR");
        std::process::exit(2);
    };
    let out = Path::new(&out);
    let man = out.join("man");
    fs::create_dir_all(&man)?;
    // The admin's commands are section 8 (run as root on the PBX); the laptop's client is a user
    // command, section 1. `build()` names subcommands `passknock-grant`, … for their own pages,
    // and `help` is no command of ours to document.
    for (cmd, section) in [
        (passknock::daemon::args::DaemonArgs::command(), "8"),
        (passknock::cli::Cli::command(), "8"),
        (knockd::client::KnockCli::command(), "1"),
    ] {
        let mut cmd = cmd.disable_help_subcommand(true);
        cmd.build();
        write_pages(&cmd, section, &man)?;
        completions(cmd, out)?;
    }
    Ok(())
}
