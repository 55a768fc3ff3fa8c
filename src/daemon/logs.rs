//! Where the daemon's log lines go and how they look: priorities the journal reads, JSON for log
//! shippers, and an audit file that is reopened after logrotate moves it.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::base::clock::{now_ms, utc};
// A panic while writing a line leaves the file as usable as before.
use crate::base::lock::lock;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot create {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the audit log {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// How stderr lines are written (`passknockd --log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; under systemd, prefixed with the syslog priority for the journal.
    #[default]
    Text,
    /// One JSON object a line: time, level, target, message, fields.
    Json,
}

/// The syslog priority of a level, as sd-daemon(3) writes it at the start of a line: journald
/// (`SyslogLevelPrefix=yes`, its default) strips it and files the line at that priority.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Whether stderr is a stream to the journal: systemd sets `JOURNAL_STREAM` to that stream's
/// `device:inode`. Compared with stderr itself, because a process whose stderr was redirected
/// elsewhere still inherits the variable.
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // fstat(2) on stderr, without taking ownership of the descriptor.
    let fd = std::os::fd::AsFd::as_fd(&io::stderr())
        .try_clone_to_owned()
        .map(File::from);
    matches!(fd.and_then(|f| f.metadata()), Ok(m) if m.dev() == dev && m.ino() == ino)
}

/// Lines for the journal: the priority prefix on every line (a multi-line message stays at its
/// priority), no timestamp (journald adds its own), no level word (the priority says it).
pub struct Journal {
    inner: format::Format<format::Full, ()>,
}

impl Default for Journal {
    fn default() -> Self {
        Journal {
            inner: format::Format::default()
                .without_time()
                .with_level(false)
                .with_ansi(false),
        }
    }
}

impl<S, N> FormatEvent<S, N> for Journal
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        let p = priority(event.metadata().level());
        for l in line.trim_end_matches('\n').split('\n') {
            writeln!(writer, "<{p}>{l}")?;
        }
        Ok(())
    }
}

/// One JSON object a line: `time`, `level`, `target`, `message`, and the event's other `fields`.
#[derive(Default)]
pub struct Json;

impl<S, N> FormatEvent<S, N> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let line = serde_json::json!({
            "time": time_ms(now_ms()),
            "level": meta.level().as_str(),
            "target": meta.target(),
            "message": fields.message.unwrap_or_default(),
            "fields": fields.rest,
        });
        writeln!(writer, "{line}")
    }
}

/// `2026-11-21T08:13:50.123Z`: a log shipper orders lines within a second too.
fn time_ms(ms: i64) -> String {
    let secs = utc(ms);
    format!("{}.{:03}Z", secs.trim_end_matches('Z'), ms.rem_euclid(1000))
}

#[derive(Default)]
struct JsonFields {
    message: Option<String>,
    rest: serde_json::Map<String, serde_json::Value>,
}

impl JsonFields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.rest.insert(field.name().to_string(), value);
        }
    }
}

impl Visit for JsonFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
}

/// The audit file, reopened at its path on reload: logrotate renames it, then signals, and every
/// line after that goes to the new file. Cheap to clone; every clone writes to the same file.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<AuditInner>,
}

struct AuditInner {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (creating it 0600, and its directory) the audit file for appending.
    pub fn open(path: &Path) -> Result<AuditLog, LogError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LogError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        Ok(AuditLog {
            inner: Arc::new(AuditInner {
                path: path.to_path_buf(),
                file: Mutex::new(open_append(path)?),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Opens the file at the path again and writes there from now on. If it cannot be opened, the
    /// old file stays in use, so no line is lost either way.
    pub fn reopen(&self) -> Result<(), LogError> {
        let new = open_append(&self.inner.path)?;
        // Swapped under the lock a line is written under: each line lands whole in one file.
        *lock(&self.inner.file) = new;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, LogError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| LogError::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// One event's write: holds the file for the whole line.
pub struct AuditLine<'a>(MutexGuard<'a, File>);

impl io::Write for AuditLine<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<'a> MakeWriter<'a> for AuditLog {
    type Writer = AuditLine<'a>;
    fn make_writer(&'a self) -> AuditLine<'a> {
        AuditLine(lock(&self.inner.file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn priorities_are_syslogs() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
    }

    #[test]
    fn times_carry_milliseconds() {
        assert_eq!(time_ms(1_795_335_230_007), "2026-11-22T08:13:50.007Z");
    }

    #[test]
    fn reopen_follows_a_rename_and_keeps_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log/audit.log");
        let log = AuditLog::open(&path).unwrap();
        writeln!(log.make_writer(), "one").unwrap();
        std::fs::rename(&path, dir.path().join("log/audit.log.1")).unwrap();
        writeln!(log.make_writer(), "two").unwrap();
        log.reopen().unwrap();
        writeln!(log.make_writer(), "three").unwrap();
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(read("log/audit.log.1"), "one\ntwo\n");
        assert_eq!(read("log/audit.log"), "three\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A directory gone: the old file stays in use and says nothing is lost.
        std::fs::remove_dir_all(dir.path().join("log")).unwrap();
        assert!(log.reopen().is_err());
        writeln!(log.make_writer(), "four").unwrap();
    }
}
