//! `passknockd`: the daemon.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use passknock::config::Config;
use passknock::daemon_args::DaemonArgs;
use passknock::defaults;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Logs to stderr (the journal under systemd); audit lines also to `audit_log`, if set.
fn init_logs(audit_log: Option<&std::path::Path>) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    use tracing_subscriber::prelude::*;
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_env("PASSKNOCK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        );
    let audit = match audit_log {
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot open the audit log {}", path.display()))?;
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::sync::Mutex::new(file))
                    .with_ansi(false)
                    .with_target(false)
                    .with_filter(
                        tracing_subscriber::filter::Targets::new()
                            .with_target("passknock::audit", tracing::Level::INFO),
                    ),
            )
        }
        None => None,
    };
    tracing_subscriber::registry().with(stderr).with(audit).init();
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = DaemonArgs::parse();
    let path: Option<PathBuf> = match &args.config {
        Some(p) => Some(p.clone()),
        None if std::path::Path::new(defaults::CONFIG_PATH).exists() => Some(defaults::CONFIG_PATH.into()),
        None => None,
    };
    let config = match &path {
        Some(p) => Config::load(p)?,
        None => Config::embedded(),
    };
    init_logs(config.daemon.audit_log.as_deref())?;
    if path.is_none() {
        info!(
            "no config given and none at {}: running on the embedded example",
            defaults::CONFIG_PATH
        );
    }
    if args.check {
        // Knock secrets are files of their own: read them now, so a bad one fails the check.
        config.knock_profiles()?;
        println!(
            "config ok: services {}",
            config.services.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: stopping"),
                _ = int.recv() => info!("SIGINT: stopping"),
            }
            stop.cancel();
        });
        passknock::daemon::run(config, path, shutdown).await?;
        Ok(())
    })
}
