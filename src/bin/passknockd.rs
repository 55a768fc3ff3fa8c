//! `passknockd`: the daemon.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use passknock::base::defaults;
use passknock::config::Config;
use passknock::daemon::args::DaemonArgs;
use passknock::daemon::logs::{AuditLog, LogFormat};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Logs to stderr (the journal under systemd); audit lines also to `audit_log`, if set, whose
/// handle is returned so a reload can reopen the file.
fn init_logs(format: LogFormat, audit_log: Option<&std::path::Path>) -> anyhow::Result<Option<AuditLog>> {
    use passknock::daemon::logs::{stderr_is_journal, Journal, Json};
    use tracing_subscriber::prelude::*;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("PASSKNOCK_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let stderr = match format {
        LogFormat::Json => layer.event_format(Json).with_filter(filter()).boxed(),
        LogFormat::Text if stderr_is_journal() => layer
            .event_format(Journal::default())
            .with_filter(filter())
            .boxed(),
        LogFormat::Text => layer
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter())
            .boxed(),
    };
    let audit = audit_log.map(AuditLog::open).transpose()?;
    let audit_layer = audit.clone().map(|log| {
        tracing_subscriber::fmt::layer()
            .with_writer(log)
            .with_ansi(false)
            .with_target(false)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("passknock::audit", tracing::Level::INFO),
            )
    });
    tracing_subscriber::registry()
        .with(stderr)
        .with(audit_layer)
        .init();
    Ok(audit)
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
    // The check and the start run the same checks, here, before anything is written: what one
    // refuses, the other refuses with the same words.
    let ready = passknock::daemon::preflight::preflight(&config)?;
    if args.check {
        println!(
            "config ok{}: services {}",
            if path.is_none() {
                " (the embedded example)"
            } else {
                ""
            },
            config.services.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        return Ok(());
    }
    let audit = init_logs(args.log_format, config.daemon.audit_log.as_deref())?;
    if path.is_none() {
        info!(
            "no config given and none at {}: running on the embedded example",
            defaults::CONFIG_PATH
        );
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
        passknock::daemon::run(config, ready, path, audit, shutdown).await?;
        Ok(())
    })
}
