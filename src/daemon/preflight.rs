//! What the daemon needs from the host before it starts — secret files private and readable,
//! every place it writes writable — checked by the one function `passknockd --check` and the start
//! both call, so a config that passes the check is one the start accepts.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::base::secret::{DisaKey, SecretError};
use crate::config::{Config, ConfigError, StoreAt};
use crate::store::pg::Target;
use crate::store::Location;

/// The longest Unix socket path: `sun_path` holds 108 bytes, the last one the NUL.
const SOCKET_PATH_MAX: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("DISA: {0}")]
    Disa(#[from] SecretError),
    #[error("config: {key}: {path}: {reason}")]
    Unwritable {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
}

/// What the checks read, handed to the start so it reads nothing twice. Only [`preflight`] makes
/// one, so the daemon cannot start without the checks.
#[derive(Debug)]
pub struct Ready {
    ami_secret: Option<ami_listener::AmiSecret>,
    disa_key: Option<Arc<DisaKey>>,
    store: Location,
}

impl Ready {
    /// The AMI secret (when AMI is on), and the DISA key when DISA is on and the key exists (a
    /// missing one was found creatable, and is made at the start).
    /// And where the store is, with a shared store's password read.
    pub fn into_parts(self) -> (Option<ami_listener::AmiSecret>, Option<Arc<DisaKey>>, Location) {
        (self.ami_secret, self.disa_key, self.store)
    }
}

/// Reads every secret the config names (AMI secret, DISA key, knock secrets), refusing one others
/// could read, and checks that the store, the audit log and the control socket can be written
/// where the config puts them. Creates nothing: a missing file or directory only needs a place
/// the daemon could make it.
pub fn preflight(config: &Config) -> Result<Ready, PreflightError> {
    let ami_secret = if config.ami.enabled {
        Some(config.ami.read_secret("[ami]")?)
    } else {
        None
    };
    let disa_key = if config.disa.enabled {
        let path = &config.disa.key_file;
        if std::fs::symlink_metadata(path).is_ok() {
            Some(Arc::new(DisaKey::load_or_create(path)?))
        } else {
            file_writable("disa.key-file", path)?;
            None
        }
    } else {
        None
    };
    config.knock_profiles()?;
    let d = &config.daemon;
    let store = match d.store_at() {
        StoreAt::File(store) => {
            file_writable("daemon.store", store)?;
            // SQLite keeps its -wal and -shm files beside the database.
            dir_writable("daemon.store", store, parent(store))?;
            Location::File(store.to_path_buf())
        }
        // The database is reached when the daemon starts; its password file must be private.
        StoreAt::Postgres(url) => Location::Postgres(Target {
            url: url.to_string(),
            password: d.store_password_file.as_deref().map(read_password).transpose()?,
            node: d.node_name(),
        }),
    };
    if let Some(log) = &d.audit_log {
        file_writable("daemon.audit-log", log)?;
    }
    let socket = &d.control_socket;
    if socket.as_os_str().len() > SOCKET_PATH_MAX {
        return Err(unwritable(
            "daemon.control-socket",
            socket,
            format!(
                "is {} bytes long; a Unix socket path has at most {SOCKET_PATH_MAX}",
                socket.as_os_str().len()
            ),
        ));
    }
    dir_writable("daemon.control-socket", socket, parent(socket))?;
    Ok(Ready {
        ami_secret,
        disa_key,
        store,
    })
}

/// The shared store's password: its file private, the first line, without its line end.
fn read_password(f: &Path) -> Result<String, PreflightError> {
    let refuse = |reason: String| unwritable("daemon.store-password-file", f, reason);
    knockd::secret::private_mode(f).map_err(|e| {
        refuse(match e {
            knockd::secret::NotPrivate::Mode(m) => format!("is mode {m:04o}: others can read it (chmod 600)"),
            knockd::secret::NotPrivate::Unreadable(e) => e.to_string(),
        })
    })?;
    let text = std::fs::read_to_string(f).map_err(|e| refuse(e.to_string()))?;
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        return Err(refuse("is empty".into()));
    }
    Ok(line)
}

fn unwritable(key: &'static str, path: &Path, reason: impl Into<String>) -> PreflightError {
    PreflightError::Unwritable {
        key,
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A file the daemon opens for writing: an existing one must be a file it may write; a missing
/// one needs a directory it may make or write in.
fn file_writable(key: &'static str, path: &Path) -> Result<(), PreflightError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(unwritable(key, path, "is a directory")),
        Ok(_) => may_write(path).map_err(|e| unwritable(key, path, e.to_string())),
        Err(e) if missing(&e) => dir_writable(key, path, parent(path)),
        Err(e) => Err(unwritable(key, path, e.to_string())),
    }
}

/// Not there, or under something that is not a directory (which the walk up then names).
fn missing(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

/// `dir` (where `path` goes) exists and may be written in, or its nearest existing ancestor is a
/// directory the daemon may create it in.
fn dir_writable(key: &'static str, path: &Path, dir: &Path) -> Result<(), PreflightError> {
    let mut at = dir;
    loop {
        match std::fs::metadata(at) {
            Ok(m) if m.is_dir() => {
                return may_write(at).map_err(|e| unwritable(key, path, format!("{}: {e}", at.display())))
            }
            Ok(_) => {
                return Err(unwritable(
                    key,
                    path,
                    format!("{} is not a directory", at.display()),
                ))
            }
            Err(e) if missing(&e) => match at.parent() {
                Some(up) if !up.as_os_str().is_empty() => at = up,
                _ => return Err(unwritable(key, path, format!("{}: {e}", at.display()))),
            },
            Err(e) => return Err(unwritable(key, path, format!("{}: {e}", at.display()))),
        }
    }
}

/// Whether this process may write `path`, as the kernel would decide for an open or a create:
/// with its effective ids and capabilities, and refusing a read-only mount (even for root).
fn may_write(path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    let r = unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::W_OK, libc::AT_EACCESS) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config(dir: &Path, daemon: &str, extra: &str) -> Config {
        Config::parse(
            &format!(
                "[daemon]\nstore = \"{d}/lib/store.db\"\ncontrol-socket = \"{d}/run/c.sock\"\n{daemon}\n\
                 [services.sip]\nports = [\"udp/5060\"]\n{extra}",
                d = dir.display()
            ),
            "t",
        )
        .unwrap()
    }

    #[test]
    fn a_good_config_passes_and_nothing_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let c = config(
            d,
            &format!("audit-log = \"{}/log/audit.log\"", d.display()),
            &format!(
                "[disa]\nenabled = true\nkey-file = \"{}/keys/disa.key\"\n",
                d.display()
            ),
        );
        let (_, key, _) = preflight(&c).unwrap().into_parts();
        assert!(key.is_none(), "a missing key is made at the start");
        assert_eq!(std::fs::read_dir(d).unwrap().count(), 0, "nothing was created");
    }

    #[test]
    fn each_refusal_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("file"), "").unwrap();
        std::fs::create_dir(d.join("dir")).unwrap();
        let key = d.join("disa.key");
        std::fs::write(&key, "ab".repeat(32)).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        type Change<'a> = &'a dyn Fn(&mut Config);
        let cases: [(Change, &str); 5] = [
            (&|c| c.daemon.store = d.join("file/x.db"), "daemon.store"),
            (&|c| c.daemon.store = d.join("dir"), "is a directory"),
            (
                &|c| c.daemon.audit_log = Some(d.join("file/deeper/audit.log")),
                "file is not a directory",
            ),
            (
                &|c| c.daemon.control_socket = d.join("s".repeat(120)),
                "at most 107",
            ),
            (
                &|c| {
                    c.disa.enabled = true;
                    c.disa.key_file = key.clone();
                },
                "DISA: the key file",
            ),
        ];
        for (change, says) in cases {
            let mut c = config(d, "", "");
            change(&mut c);
            let e = preflight(&c).unwrap_err().to_string();
            assert!(e.contains(says), "{says}: {e}");
        }
    }
}
