//! Defaults, named in one place: the config, the dialplan and the tests all read them from here.

use std::time::Duration;

/// Where the daemon reads its config when `--config` is not given and the file exists.
pub const CONFIG_PATH: &str = "/etc/passknock/passknock.toml";
/// The control socket the admin CLI talks to.
pub const CONTROL_SOCKET: &str = "/run/passknock/control.sock";
/// The store (SQLite database).
pub const STORE_PATH: &str = "/var/lib/passknock/passknock.db";
/// The nftables table the daemon owns; no other table is ever touched.
pub const TABLE: &str = "passknock";
/// Hook priority of the input chain: before the usual `filter` chains, so a drop here holds
/// whatever the host's own firewall says afterwards.
pub const CHAIN_PRIORITY: i32 = -10;
/// How long a grant lasts when none is asked for.
pub const GRANT_TTL: Duration = Duration::from_secs(2 * 3600);
/// The longest grant anyone may ask for.
pub const GRANT_TTL_MAX: Duration = Duration::from_secs(24 * 3600);
/// How long a ban lasts when none is asked for.
pub const BAN_TTL: Duration = Duration::from_secs(3600);
/// The longest ban.
pub const BAN_TTL_MAX: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often the table is read back and brought in line with the store.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(60);
/// A wall-clock move this far from the monotonic clock between two readings is a step, and is
/// logged; NTP's slewing (at most 0.5 ms a second) stays far below it.
pub const CLOCK_STEP_MIN: Duration = Duration::from_secs(2);
/// First wait before retrying a failed nft apply; doubles up to the reconcile interval.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The FastAGI listener address; `dialplan/passknock.conf` must name the same port.
pub const AGI_LISTEN: &str = "127.0.0.1:4573";
/// FastAGI calls served at once.
pub const AGI_MAX_SESSIONS: usize = 64;
/// The longest one call may spend in the DISA flow.
pub const AGI_SESSION_DEADLINE: Duration = Duration::from_secs(180);
/// How long a new FastAGI connection has to send its `agi_*` block. Asterisk sends it the moment
/// it connects, so a connection still silent after this is not Asterisk, and is closed.
pub const AGI_START_TIMEOUT: Duration = Duration::from_secs(2);
/// FastAGI connections still starting (connected, environment not yet read), at most: each is a
/// descriptor and a task, so this bound stays well below the daemon's 1024-descriptor limit.
pub const AGI_MAX_STARTING: usize = 256;
/// The same, from one peer address. Asterisk connects from one address (usually 127.0.0.1) and
/// opens at most one connection per call entering AGI, so this stays well above
/// [`AGI_MAX_SESSIONS`].
pub const AGI_MAX_STARTING_PER_PEER: usize = 128;
/// The DISA server key.
pub const DISA_KEY_PATH: &str = "/var/lib/passknock/disa.key";
/// Length of a new passcode, and the shortest allowed.
pub const PASSCODE_DIGITS: usize = 12;
pub const PASSCODE_DIGITS_MIN: usize = 10;
/// The Prometheus endpoint, when enabled.
pub const METRICS_LISTEN: &str = "127.0.0.1:9477";
/// Asterisk's manager interface.
pub const AMI_ADDRESS: &str = "127.0.0.1:5038";
/// The manager user DESIGN.md gives passknock (`read = system,security,call`).
pub const AMI_USERNAME: &str = "passknock";
/// First wait before reconnecting to AMI; doubles up to [`AMI_RECONNECT_MAX`]. Small, so a
/// restarted Asterisk is seen again within seconds.
pub const AMI_RECONNECT_FIRST: Duration = Duration::from_millis(250);
pub const AMI_RECONNECT_MAX: Duration = Duration::from_secs(4);
/// How often the AMI listener pings; a connection silent for a whole period after a ping is dead.
pub const AMI_KEEPALIVE: Duration = Duration::from_secs(20);
/// Bound on connecting to AMI, logging in, and any one write.
pub const AMI_TIMEOUT: Duration = Duration::from_secs(5);
/// Security events from one address within [`BAN_WINDOW`] that get it banned.
pub const BAN_THRESHOLD: u32 = 5;
pub const BAN_WINDOW: Duration = Duration::from_secs(60);
/// A first offender's ban; each repeat multiplies it by [`BAN_GROWTH`], up to [`BAN_TTL_MAX_AMI`].
pub const BAN_FIRST: Duration = Duration::from_secs(15 * 60);
pub const BAN_GROWTH: u32 = 4;
pub const BAN_TTL_MAX_AMI: Duration = Duration::from_secs(7 * 24 * 3600);
/// A ban counts as a repeat when it comes within this long of the address's previous ban.
pub const BAN_FORGET: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest a live call keeps a grant open past its TTL.
pub const HOLD_MAX: Duration = Duration::from_secs(4 * 3600);
/// While a call is up its grant is held this far ahead, renewed every third of it: if the daemon
/// dies mid-call, the kernel still closes access within this long of the grant's own end.
pub const HOLD_STEP: Duration = Duration::from_secs(60);
/// Most requests one control connection may send; a guard against a runaway script.
pub const CONTROL_MAX_LINE: usize = 64 * 1024;
/// Control connections open at once. The CLI opens one per command; past the cap, the connection
/// idle the longest makes room, and when none is idle the newcomer is told the daemon is busy.
pub const CONTROL_MAX_CONNECTIONS: usize = 64;
/// A control connection that sends no request (or reads no reply) for this long is closed. The
/// CLI writes its request the moment it connects.
pub const CONTROL_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest control reply the CLI reads: a full listing of a few hundred thousand grants fits.
pub const CONTROL_MAX_REPLY: usize = 256 * 1024 * 1024;
/// Most control requests the daemon applies together in one store transaction and one nft batch.
pub const BATCH_MAX: usize = 512;

/// How long audit events stay in the history (`daemon.history-retention`).
pub const HISTORY_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// The shortest history retention allowed: `passknock status` counts the last 24 hours from it.
pub const HISTORY_RETENTION_MIN: Duration = Duration::from_secs(24 * 3600);
/// Audit events waiting for the history writer, at most; past it a row is dropped and counted,
/// never waited for. A burst this long is far beyond what the engine, calls and knocks make
/// between two of the writer's commits.
pub const HISTORY_QUEUE: usize = 8192;
/// Most events the history writer commits in one transaction.
pub const HISTORY_BATCH: usize = 1024;
/// How long a read of the history (`log`, `report`, `status`) waits for the rows queued before it
/// to be committed; past it, it reads what is there.
pub const HISTORY_FLUSH_WAIT: Duration = Duration::from_secs(2);
/// How often the history writer deletes rows past the retention.
pub const HISTORY_PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Rows one flood kind (refused knocks, refused passcodes, …) may add in a minute, one per
/// address and who; the rest of that minute is counted into one more row.
pub const HISTORY_FLOOD_KEYS: usize = 32;
/// How far back `passknock log` and `passknock report` look when not told.
pub const LOG_SINCE: Duration = Duration::from_secs(24 * 3600);
/// Most events one `passknock log` shows (the newest); it says when it left older ones out.
pub const LOG_ROWS: usize = 10_000;
/// Rows in each list of `passknock report`: the top refused sources, and the newest bans,
/// lockouts and suspensions.
pub const REPORT_TOP: usize = 10;
pub const REPORT_ROWS: usize = 50;

/// The NFLOG group the table logs knock ports to (`log group N`); the daemon listens on it.
pub const KNOCK_NFLOG_GROUP: u16 = 7447;
/// The NFLOG group the table logs dropped SIP requests to; apart from the knock group.
pub const SIP_NFLOG_GROUP: u16 = 7448;
/// Dropped SIP requests logged per second from one source, and its burst: a softphone's
/// REGISTER and its retransmissions (RFC 3261 timer E: 0.5 s, 1 s, 2 s, ...) fit well inside.
pub const SIP_LOG_PER_SOURCE_RATE: u32 = 5;
pub const SIP_LOG_PER_SOURCE_BURST: u32 = 10;
/// Dropped SIP requests logged per second from everyone: what bounds the daemon's work under a
/// flood from many sources.
pub const SIP_LOG_RATE: u32 = 500;
pub const SIP_LOG_BURST: u32 = 1000;
/// Bytes of each dropped SIP packet logged (`log snaplen` and the group's copy range): a whole
/// datagram that fits a 1500-byte path MTU, IP and UDP headers included. A REGISTER that fits
/// no MTU did not come from a softphone; one cut short still yields every header whose line
/// ends within the capture (the parser never reads half a line).
pub const SIP_CAPTURE_LEN: u32 = 1500;
/// How long the table keeps an idle source's limit, at least: its bucket is full again once
/// burst/rate seconds have passed, so an entry idle longer than that is worth no more than a new
/// one, and a short life lets the meter empty soon after a flood from many sources.
pub const SIP_LOG_SOURCE_TIMEOUT_MIN_SECS: u32 = 10;
/// Sources with a knock sequence in progress, at most (about 100 bytes each).
pub const KNOCK_MAX_IN_PROGRESS: usize = knockd::gate::MAX_IN_PROGRESS;

/// The example config, embedded so `passknockd` runs with no file at all.
pub const EXAMPLE_CONFIG: &str = include_str!("../../examples/passknock.toml");
