//! The secret files the config names: readable by their owner only.

use knockd::secret::NotPrivate;
use std::path::Path;

use super::{fail, ok, Check};
use crate::config::{Config, StoreAt};

/// Files that hold secrets must be readable by their owner only.
pub(super) fn secrets(config: &Config) -> Check {
    let mut files: Vec<(String, &Path, bool)> = match config.daemon.store_at() {
        StoreAt::File(store) => vec![("daemon.store".into(), store, false)],
        StoreAt::Postgres(_) => Vec::new(),
    };
    if let Some(f) = &config.daemon.store_password_file {
        files.push(("daemon.store-password-file".into(), f, true));
    }
    if config.disa.enabled {
        files.push(("disa.key-file".into(), &config.disa.key_file, false));
    }
    if config.ami.enabled {
        if let Some(f) = &config.ami.secret_file {
            files.push(("ami.secret-file".into(), f, true));
        }
    }
    for (name, p) in &config.knock.profiles {
        if let Some(f) = &p.secret_file {
            files.push((format!("knock.profiles.{name}.secret-file"), f, true));
        }
    }
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    for (key, path, required) in &files {
        match knockd::secret::private_mode(path) {
            Ok(()) => {}
            Err(NotPrivate::Mode(mode)) => {
                problems.push(format!(
                    "{} ({key}) is mode {mode:04o}: others can read it",
                    path.display()
                ));
                fixes.push(format!("chmod 600 {}", path.display()));
            }
            Err(NotPrivate::Unreadable(e)) if *required || e.kind() != std::io::ErrorKind::NotFound => {
                problems.push(format!("{} ({key}): {e}", path.display()));
                fixes.push(format!("create {} with mode 0600", path.display()));
            }
            // The store and the DISA key are made (0600) at the daemon's first start.
            Err(_) => {}
        }
    }
    if problems.is_empty() {
        ok(
            "secrets",
            format!("{} file(s) private (0600 or stricter)", files.len()),
        )
    } else {
        let detail = problems.join("; ");
        fail(
            "secrets",
            detail,
            format!(
                "{} (passknockd refuses to start with a readable secret)",
                fixes.join("; ")
            ),
        )
    }
}
