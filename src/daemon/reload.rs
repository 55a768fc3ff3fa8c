//! Reload (SIGHUP or `passknock reload`): reopen the audit file, read and check the new config,
//! swap the knock gate, then hand the engine its new settings. All but the last step run here,
//! off the engine's thread.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::knock::{KnockApplied, KnockSlot};
use super::logs::AuditLog;
use super::notify;
use crate::base::clock::now_ms;
use crate::config::{AmiConfig, Config};
use crate::engine::{Actor, EngineHandle};
use crate::model::{Event, Kind, Source};
use crate::observe::audit;

/// What a reload needs: where the config came from, the one running, the knock listener's slot.
#[derive(Clone)]
pub struct Reloader {
    engine: EngineHandle,
    /// `None` when running on the embedded example.
    path: Option<PathBuf>,
    /// The config the engine and the listeners run on, compared with the new one.
    running: Arc<Mutex<Config>>,
    knock: KnockSlot,
    audit: Option<AuditLog>,
    /// One reload at a time: each is compared with what the one before it left running.
    one: Arc<tokio::sync::Mutex<()>>,
}

impl Reloader {
    pub fn new(
        engine: EngineHandle,
        path: Option<PathBuf>,
        running: Config,
        knock: KnockSlot,
        audit: Option<AuditLog>,
    ) -> Reloader {
        Reloader {
            engine,
            path,
            running: Arc::new(Mutex::new(running)),
            knock,
            audit,
            one: Arc::default(),
        }
    }

    /// Reloads; the message says what changed (or why nothing did) in words for the asker.
    pub async fn reload(&self, actor: &Actor) -> Result<String, String> {
        // Before the reload's own audit line, so that line is the new file's first. Done whatever
        // becomes of the config: logrotate's signal must never leave lines in a moved file.
        if let Some(log) = &self.audit {
            if let Err(e) = log.reopen() {
                warn!("audit lines still go to the file opened before: {e}");
            }
        }
        let Some(path) = self.path.clone() else {
            return Err("running on the embedded example config: there is no file to reload".into());
        };
        let _one = self.one.lock().await;
        let running = lock(&self.running).clone();
        let knock = self.knock.clone();
        let p = path.clone();
        // Reading the file and waiting for the knock thread to take its gate both block.
        let checked = tokio::task::spawn_blocking(move || prepare(&p, &running, &knock))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        let (new, restart) = match checked {
            Ok(x) => x,
            Err(e) => {
                let message = format!("config not reloaded, the running one stays: {e}");
                warn!("{message}");
                return Err(message);
            }
        };
        let reloaded = self.engine.reload(actor, new.clone()).await.map_err(|e| e.0)?;
        *lock(&self.running) = new;
        audit::record(
            Event::new(Kind::Reload, now_ms())
                .who(actor.who.as_str())
                .source(Source::Admin)
                .detail(format!("from {}", path.display())),
        );
        let mut message = format!("config reloaded from {}", path.display());
        match reloaded.table {
            Ok(r) => message.push_str(&format!("; table {r}")),
            Err(e) => message.push_str(&format!("; table not applied yet (retrying): {e}")),
        }
        if !restart.is_empty() {
            message.push_str(&format!(
                "; {} change(s) take effect at the next restart",
                restart.join(", ")
            ));
        }
        Ok(message)
    }
}

/// Loads and checks the config at `path` against `running`, and swaps the knock profiles in.
/// Returns the config the engine is to take (with what waits for a restart left as it runs) and
/// the list of what takes effect at the next restart. An error changes nothing.
fn prepare(
    path: &std::path::Path,
    running: &Config,
    knock: &KnockSlot,
) -> Result<(Config, Vec<&'static str>), String> {
    let mut new = Config::load(path).map_err(|e| e.to_string())?;
    let mut restart = at_restart(running, &new);
    // Knock profiles are swapped into the running listener (last: nothing after this refuses).
    // What it cannot take now — another NFLOG group, a first profile — waits for a restart, and
    // until then the table keeps logging the ports the listener knows.
    if new.knock != running.knock {
        match knock.apply(&new) {
            Ok(KnockApplied::Now) => {}
            Ok(KnockApplied::AtRestart(what)) => {
                restart.push(what);
                new.knock = running.knock.clone();
            }
            Err(e) => return Err(format!("knock: {e}")),
        }
    }
    // The SIP attempt reader holds its NFLOG group and window from the start; the table keeps
    // logging to the group it reads (rates and ports change now).
    let reader = |c: &Config| (c.sip_capture().map(|c| c.group), c.sip_attempts.window);
    if reader(&new) != reader(running) {
        restart.push("sip-attempts (on/off, nflog-group, window)");
        new.sip_attempts.enabled = Some(running.sip_capture().is_some());
        new.sip_attempts.nflog_group = running.sip_attempts.nflog_group;
        new.sip_attempts.window = running.sip_attempts.window;
    }
    // The AMI listener reads its list of granting endpoints once, at the start.
    if new.sip_auth_grant != running.sip_auth_grant {
        restart.push("sip-auth-grant");
        new.sip_auth_grant = running.sip_auth_grant.clone();
    }
    Ok((new, restart))
}

/// The settings a running daemon cannot change: they take effect at the next restart.
fn at_restart(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut restart = Vec::new();
    if new.daemon.store != running.daemon.store {
        restart.push("daemon.store");
    }
    if new.daemon.control_socket != running.daemon.control_socket {
        restart.push("daemon.control-socket");
    }
    // The reload reopens the audit file at the path it was started with (after logrotate).
    if new.daemon.audit_log != running.daemon.audit_log {
        restart.push("daemon.audit-log");
    }
    if new.agi.listen != running.agi.listen || new.disa.enabled != running.disa.enabled {
        restart.push("agi.listen / disa.enabled");
    }
    // The AMI listener holds its connection settings and ban policy from the start; only
    // hold-max, which the engine applies, changes now.
    let ami_then = AmiConfig {
        hold_max: running.ami.hold_max,
        ..new.ami.clone()
    };
    if ami_then != running.ami {
        restart.push("ami (all but hold-max)");
    }
    restart
}

/// SIGHUP reloads as `passknock reload` does; a bad config is logged and changes nothing.
pub fn watch_sighup(reloader: Reloader, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            warn!("cannot watch SIGHUP: reload with `passknock reload`");
            return;
        };
        let actor = Actor::new("SIGHUP", Source::Admin);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = hup.recv() => {}
            }
            let _ = notify::notify("RELOADING=1");
            match reloader.reload(&actor).await {
                Ok(message) => info!("SIGHUP: {message}"),
                Err(message) => warn!("SIGHUP: {message}"),
            }
            let _ = notify::notify("READY=1");
        }
    });
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[services.sip]\nports = [\"udp/5060\"]\n";

    fn config(extra: &str) -> Config {
        Config::parse(&format!("{BASE}{extra}"), "test").unwrap()
    }

    #[test]
    fn what_a_running_daemon_cannot_take_waits_for_a_restart() {
        let running = config("");
        assert!(at_restart(&running, &config("[grants]\nttl-max = \"8h\"\n")).is_empty());
        // hold-max is the engine's, and changes now; the rest of [ami] waits.
        assert!(at_restart(&running, &config("[ami]\nhold-max = \"2h\"\n")).is_empty());
        assert_eq!(
            at_restart(&running, &config("[ami]\nusername = \"other\"\n")),
            ["ami (all but hold-max)"]
        );
        assert_eq!(
            at_restart(
                &running,
                &config("[daemon]\nstore = \"/elsewhere.db\"\ncontrol-socket = \"/elsewhere.sock\"\n")
            ),
            ["daemon.store", "daemon.control-socket"]
        );
    }

    #[test]
    fn a_config_that_does_not_load_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("passknock-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("passknock.toml");
        std::fs::write(&path, "[services.sip]\nports = [\"udp/99999\"]\n").unwrap();
        let e = prepare(&path, &config(""), &KnockSlot::default()).unwrap_err();
        assert!(e.contains("99999"), "{e}");
        std::fs::write(&path, format!("{BASE}[grants]\nttl-max = \"8h\"\n")).unwrap();
        let (new, restart) = prepare(&path, &config(""), &KnockSlot::default()).unwrap();
        assert_eq!(new.grants.ttl_max.to_string(), "8h");
        assert!(restart.is_empty());
        // The AMI listener holds its granting endpoints from the start: the running ones stay.
        let ami = "[ami]\nenabled = true\nsecret-file = \"/x\"\n";
        let running = config(ami);
        std::fs::write(
            &path,
            format!("{BASE}{ami}[sip-auth-grant]\nendpoints = [\"701\"]\n"),
        )
        .unwrap();
        let (new, restart) = prepare(&path, &running, &KnockSlot::default()).unwrap();
        assert_eq!(restart, ["sip-auth-grant"]);
        assert!(!new.sip_auth_grant.enabled());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
