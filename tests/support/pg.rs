//! A throwaway PostgreSQL cluster for the tests: Debian's server binaries, a data directory and a
//! Unix socket directory under /tmp, no TCP listener. Daemons in other network namespaces reach it
//! through the socket directory, since namespaces share the file system.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The cluster's bootstrap superuser, and the role the tests' daemons log in as.
pub const ROLE: &str = "passknock";

/// One running cluster; stopped and removed on drop.
pub struct Pg {
    bin: PathBuf,
    root: PathBuf,
    running: bool,
}

impl Pg {
    /// Makes and starts a fresh cluster. Panics with the server's words if it cannot.
    pub fn start() -> Pg {
        let bin = bin_dir();
        let root = tempdir();
        std::fs::create_dir(root.join("data")).unwrap();
        std::fs::create_dir(root.join("sock")).unwrap();
        run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&root));
        run(Command::new("chmod").arg("0700").arg(root.join("data")));
        run(as_postgres(&bin.join("initdb"))
            .args([
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
                "-U",
                ROLE,
                "-D",
            ])
            .arg(root.join("data")));
        let mut pg = Pg {
            bin,
            root,
            running: false,
        };
        pg.start_again();
        pg
    }

    /// The socket directory a daemon's URL names.
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("sock")
    }

    /// The URL of database `db` on this cluster, as a node's `[daemon] store` names it.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://{ROLE}@/{db}?host={}", self.socket_dir().display())
    }

    /// Makes an empty database.
    pub fn create_db(&self, name: &str) {
        run(Command::new(self.bin.join("createdb"))
            .args(["-h"])
            .arg(self.socket_dir())
            .args(["-U", ROLE, name]));
    }

    /// Runs SQL in `db` with psql and returns its unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = run(Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .args(["-U", ROLE, "-d", db, "-c", sql]));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stops the server (fast shutdown: sessions are cut, committed data stays).
    pub fn stop(&mut self) {
        if self.running {
            run(self.ctl().args(["stop", "-m", "fast", "-w"]));
            self.running = false;
        }
    }

    /// Starts the server again on the same data, and waits until it takes connections.
    pub fn start_again(&mut self) {
        if self.running {
            return;
        }
        let opts = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -c max_connections=200",
            self.socket_dir().display()
        );
        run(self
            .ctl()
            .args(["start", "-w", "-t", "60", "-l"])
            .arg(self.root.join("server.log"))
            .args(["-o", &opts]));
        self.running = true;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .arg("-h")
                .arg(self.socket_dir())
                .arg("-q")
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not come up: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }

    fn ctl(&self) -> Command {
        let mut c = as_postgres(&self.bin.join("pg_ctl"));
        c.arg("-D").arg(self.root.join("data"));
        c
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if self.running {
            let _ = self.ctl().args(["stop", "-m", "immediate", "-w"]).output();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Debian's server binaries, newest version first.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server is not installed (Debian's postgresql package); tests/run-all.sh installs it")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, b)| b)
        .expect("no /usr/lib/postgresql/*/bin/initdb: install Debian's postgresql package")
}

fn as_postgres(program: &Path) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(program);
    // The server's own files only; a caller's working directory may be private to root.
    c.current_dir("/");
    c
}

fn tempdir() -> PathBuf {
    let out = run(Command::new("mktemp").args(["-d", "/tmp/passknock-pg.XXXXXX"]));
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    run(Command::new("chmod").arg("0755").arg(&dir));
    dir
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
