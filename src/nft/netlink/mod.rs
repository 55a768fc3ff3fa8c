//! Set elements over netlink, in-process: element changes as one atomic nfnetlink batch and a
//! timeout set read back by a dump, without spawning `nft` (about 1.6 ms a run).
//!
//! The messages are encoded and walked by hand ([`codec`]): a batch of 100,000 elements is
//! written straight into one reusable buffer and a dump is read in place, with no allocation
//! per element; netlink-packet-netfilter's types would build a tree of vectors per element both
//! ways. The tests read the hand encoding back through that crate.

mod codec;
mod intervals;
pub mod structure;

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

use self::codec::{Op, Writer};
use super::changes::{timeout_secs, Changes};
use super::render::Elements;
use super::runner::NftError;
use crate::base::addr::Net;
use crate::base::clock::UnixMs;

/// The send buffer asked for at open: room for a batch of 100,000 IPv6 elements (about 11 MB;
/// the kernel doubles the figure). A larger batch grows it on demand.
const SNDBUF: usize = 16 << 20;
/// The receive buffer: a batch's errors, or a dump's pieces of up to 32 KiB.
const RCVBUF: usize = 4 << 20;
/// Our side of one datagram: the kernel sends dump pieces of at most 32 KiB.
const RECV_LEN: usize = 64 << 10;
/// How long a dump may wait on the kernel before it is called stuck.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// The timeout of an element added only to be deleted in the same batch (see [`Netlink::apply`]).
const REMOVE_TIMEOUT_MS: u64 = 1000;
/// How often a dump is tried when a concurrent change or a resize of the set's hash table
/// disturbs it; the wait before the next try doubles from [`DUMP_RETRY_WAIT`].
const DUMP_TRIES: u32 = 6;
const DUMP_RETRY_WAIT: Duration = Duration::from_millis(5);

/// A set as the kernel lists it: addresses in order, each with the ms it has left (`None`: no
/// timeout).
pub type SetListing = Vec<(IpAddr, Option<u64>)>;

/// A NETLINK_NETFILTER socket for one table's set elements.
pub struct Netlink {
    sock: Socket,
    seq: u32,
    /// The send buffer the kernel granted, in bytes.
    sndbuf: usize,
    out: Vec<u8>,
    buf: Vec<u8>,
    /// Per change, the index of its set in the batch being written.
    tags: Vec<u32>,
    /// A dump was abandoned midway: its pieces may still come, so the next call opens afresh.
    dirty: bool,
}

/// One element message sent, for the words of an error.
struct Sent<'a> {
    seq: u32,
    op: Op,
    /// Which of the three passes of [`Netlink::apply`] wrote it.
    pass: u8,
    set: &'a str,
    count: usize,
}

/// One message the kernel refused.
struct Refusal {
    seq: u32,
    errno: i32,
    text: Option<String>,
}

fn kernel(message: String) -> NftError {
    NftError::Kernel { message }
}

/// The kernel timeout for an element ending at `end`, in milliseconds: the spawn path's whole
/// seconds, rounded up ([`timeout_secs`]), though the kernel would take any millisecond. So the
/// kernel holds the same timeouts whichever path wrote them, `nft list` shows them alike, and
/// the read-back's compare (`readback::compare`: remaining seconds rounded up against nft's
/// expiry rounded down, 2 s of drift allowed) keeps the up-to-a-second margin it was built on;
/// with exact milliseconds a 200,000-element listing that takes a second drifts past it.
pub fn timeout_ms(end: UnixMs, now: UnixMs) -> u64 {
    u64::from(timeout_secs(end, now)) * 1000
}

/// Sets a socket buffer with the FORCE option (past the sysctl ceiling; needs CAP_NET_ADMIN) and
/// returns the size the kernel granted.
fn force_buf(sock: &Socket, force: libc::c_int, get: libc::c_int, bytes: usize) -> io::Result<usize> {
    let v = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    let fd = sock.as_raw_fd();
    // SAFETY: setsockopt/getsockopt on our own socket with a correctly sized c_int.
    unsafe {
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            force,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        let mut got: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        if libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            get,
            &mut got as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(got.max(0) as usize)
    }
}

impl Netlink {
    /// Opens the socket: buffers for a 100,000-element batch, capped acks (the kernel does not
    /// echo a whole batch message back with its error) and extended acks (its reason in words).
    pub fn open() -> Result<Netlink, NftError> {
        let fail = |what: &str, e: io::Error| {
            let hint = match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => "; changing nftables needs CAP_NET_ADMIN",
                Some(libc::EPROTONOSUPPORT) => "; this kernel has no nfnetlink",
                _ => "",
            };
            kernel(format!("cannot {what} a netfilter netlink socket: {e}{hint}"))
        };
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| fail("open", e))?;
        sock.bind_auto().map_err(|e| fail("bind", e))?;
        let sndbuf = force_buf(&sock, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, SNDBUF)
            .map_err(|e| fail("size the send buffer of", e))?;
        force_buf(&sock, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, RCVBUF)
            .map_err(|e| fail("size the receive buffer of", e))?;
        sock.set_cap_ack(true)
            .map_err(|e| fail("set NETLINK_CAP_ACK on", e))?;
        sock.set_ext_ack(true)
            .map_err(|e| fail("set NETLINK_EXT_ACK on", e))?;
        knockd::nflog::set_recv_timeout(&sock, RECV_TIMEOUT)
            .map_err(|e| fail("set a receive timeout on", e))?;
        // A fresh start for the numbering, as nft does, so answers to an earlier socket's
        // requests are never taken for ours.
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Netlink {
            sock,
            seq,
            sndbuf,
            out: Vec::new(),
            buf: vec![0u8; RECV_LEN],
            tags: Vec::new(),
            dirty: false,
        })
    }

    /// Opens a fresh socket when an abandoned dump may still be answering on this one.
    fn ready(&mut self) -> Result<(), NftError> {
        if self.dirty {
            *self = Netlink::open()?;
        }
        Ok(())
    }

    /// Applies `changes` to table `inet <table>` as one atomic batch, with the same meaning as
    /// [`render_changes`](super::changes::render_changes): nft has no "replace element", so each
    /// element to set is added (a no-op if present), deleted, and added with its remaining life;
    /// each element to remove is added with a short timeout, then deleted. It cannot fail on an
    /// element being there or not, and no packet sees the gap.
    ///
    /// Timeouts are whole seconds rounded up, as on the spawn path ([`timeout_ms`]).
    pub fn apply(&mut self, table: &str, changes: &Changes, now: UnixMs) -> Result<(), NftError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.ready()?;
        let keys = || changes.set.iter().map(|(k, _)| k).chain(changes.remove.iter());
        // Each distinct set once, in first-seen order; changes usually come sorted by set.
        let mut sets: Vec<&str> = Vec::new();
        let mut tags = std::mem::take(&mut self.tags);
        tags.clear();
        for k in keys() {
            let i = match sets.iter().rposition(|s| *s == k.set) {
                Some(i) => i,
                None => {
                    sets.push(&k.set);
                    sets.len() - 1
                }
            };
            tags.push(i as u32);
        }
        let mut out = std::mem::take(&mut self.out);
        let mut sent: Vec<Sent<'_>> = Vec::new();
        let mut w = Writer::begin(&mut out, self.seq);
        let begin = self.seq;
        for pass in 0..3u8 {
            let op = if pass == 1 { Op::Delete } else { Op::Add };
            for (si, set) in sets.iter().enumerate() {
                let mut open = false;
                let items = changes
                    .set
                    .iter()
                    .map(|(k, end)| (k.addr, Some(*end)))
                    .chain(changes.remove.iter().map(|k| (k.addr, None)));
                for ((addr, end), tag) in items.zip(&tags) {
                    if *tag as usize != si {
                        continue;
                    }
                    let timeout = match (pass, end) {
                        (1, _) => None,
                        (_, Some(end)) => Some(timeout_ms(end, now)),
                        (0, None) => Some(REMOVE_TIMEOUT_MS),
                        (_, None) => continue,
                    };
                    if !open || !w.fits(addr, timeout.is_some()) {
                        if open {
                            w.end_msg();
                        }
                        let seq = w.start_msg(op, table, set);
                        sent.push(Sent {
                            seq,
                            op,
                            pass,
                            set,
                            count: 0,
                        });
                        open = true;
                    }
                    w.element(addr, timeout);
                    sent.last_mut().expect("a message is open").count += 1;
                }
                if open {
                    w.end_msg();
                }
            }
        }
        self.seq = w.finish();
        self.out = out;
        self.tags = tags;
        self.transact(table, begin, &sent)
    }

    /// Adds `elements` with their timeouts in one atomic batch of plain adds: a third of
    /// [`apply`](Netlink::apply)'s work in the kernel, for sets known to be empty (just created
    /// by a rebuild). An element already present keeps its old timeout (or, on kernels that
    /// update timeouts in place, takes the new one).
    pub fn fill(&mut self, table: &str, elements: &Elements, now: UnixMs) -> Result<(), NftError> {
        if elements.is_empty() {
            return Ok(());
        }
        self.ready()?;
        let begin = self.seq;
        let mut sent: Vec<Sent<'_>> = Vec::new();
        let mut w = Writer::begin(&mut self.out, begin);
        for (k, end) in elements {
            let timeout = Some(timeout_ms(*end, now));
            let same_set = sent.last().is_some_and(|s| s.set == k.set);
            if !same_set || !w.fits(k.addr, true) {
                if !sent.is_empty() {
                    w.end_msg();
                }
                let seq = w.start_msg(Op::Add, table, &k.set);
                sent.push(Sent {
                    seq,
                    op: Op::Add,
                    pass: 0,
                    set: &k.set,
                    count: 0,
                });
            }
            w.element(k.addr, timeout);
            sent.last_mut().expect("a message is open").count += 1;
        }
        w.end_msg();
        self.seq = w.finish();
        self.transact(table, begin, &sent)
    }

    /// Empties one set, atomically.
    pub fn flush(&mut self, table: &str, set: &str) -> Result<(), NftError> {
        self.ready()?;
        let begin = self.seq;
        let mut w = Writer::begin(&mut self.out, begin);
        let seq = w.start_msg(Op::Flush, table, set);
        w.end_msg();
        self.seq = w.finish();
        let sent = [Sent {
            seq,
            op: Op::Flush,
            pass: 0,
            set,
            count: 0,
        }];
        self.transact(table, begin, &sent)
    }

    /// Sends the batch in `self.out` (its messages `sent`, numbered from `begin`) and reads the
    /// kernel's answers. The kernel runs a batch inside `sendmsg`, so every answer is queued when
    /// it returns: they are read without waiting, and a missing one is an error, not a hang.
    fn transact(&mut self, table: &str, begin: u32, sent: &[Sent<'_>]) -> Result<(), NftError> {
        let Some(last) = sent.last() else {
            return Ok(());
        };
        if self.out.len() + 1024 > self.sndbuf {
            self.sndbuf = force_buf(
                &self.sock,
                libc::SO_SNDBUFFORCE,
                libc::SO_SNDBUF,
                self.out.len() + 1024,
            )
            .map_err(|e| kernel(format!("cannot grow the netlink send buffer: {e}")))?;
        }
        let end = self.seq.wrapping_sub(1);
        let ours = |seq: u32| seq.wrapping_sub(begin) <= end.wrapping_sub(begin);
        loop {
            match self.sock.send(&self.out, 0) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(kernel(format!(
                        "cannot send the batch for table inet {table} to the kernel: {e}"
                    )))
                }
            }
        }
        let mut refusals: Vec<Refusal> = Vec::new();
        let mut acked = false;
        while !acked {
            let n = match self.sock.recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT) {
                Ok(n) => n.min(self.buf.len()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.dirty = true;
                    return Err(kernel(format!(
                        "cannot read the kernel's answer for table inet {table}: {e}"
                    )));
                }
            };
            for m in codec::messages(&self.buf[..n]) {
                if m.kind != codec::NLMSG_ERROR {
                    continue;
                }
                let Some(a) = codec::answer(&m) else { continue };
                if !ours(a.request_seq) {
                    continue;
                }
                if a.errno != 0 {
                    refusals.push(Refusal {
                        seq: a.request_seq,
                        errno: a.errno,
                        text: a.text.map(str::to_string),
                    });
                }
                acked |= a.request_seq == last.seq;
            }
        }
        if !refusals.is_empty() {
            return Err(refused(table, sent, &refusals));
        }
        if !acked {
            return Err(kernel(format!(
                "the kernel did not acknowledge the batch for table inet {table}"
            )));
        }
        Ok(())
    }

    /// Lists one timeout set, sorted by address: each address with the milliseconds the kernel
    /// has left on it (`None`: no timeout). `Ok(None)` when the table or the set does not exist.
    ///
    /// The kernel lists a set in pieces, walking its hash table afresh for each and skipping
    /// what it already sent; while the table is being resized (just after it grew by thousands)
    /// the order changes between pieces, so some elements come twice and as many not at all.
    /// An address seen twice therefore means the listing is not whole: it is tried again after
    /// a short wait (as is one a concurrent change interrupted), so this may sleep some 150 ms.
    pub fn list_set(&mut self, table: &str, set: &str) -> Result<Option<SetListing>, NftError> {
        self.list_elements(table, set, |seen| {
            let mut elems: SetListing = seen.iter().map(|e| (e.addr, e.left)).collect();
            elems.sort_unstable_by_key(|e| e.0);
            elems.windows(2).all(|w| w[0].0 != w[1].0).then_some(elems)
        })
    }

    /// An interval set's networks (trusted, standing), in order; `Ok(None)` when the table or
    /// the set does not exist. The kernel keeps each interval as its first address and, flagged,
    /// the first address after it (none when it runs to the top of the address space); each
    /// interval is told back as the prefixes that cover it exactly.
    pub fn list_intervals(&mut self, table: &str, set: &str) -> Result<Option<Vec<Net>>, NftError> {
        self.list_elements(table, set, |seen| {
            Some(intervals::prefixes(
                seen.iter().map(|e| (e.addr, e.interval_end)).collect(),
            ))
        })
    }

    /// Dumps one set's elements and makes them into `T`; tried again after a short wait when a
    /// change interrupted the dump or `make` finds the listing not whole (`None`).
    fn list_elements<T>(
        &mut self,
        table: &str,
        set: &str,
        make: impl Fn(&[codec::Seen]) -> Option<T>,
    ) -> Result<Option<T>, NftError> {
        self.ready()?;
        let fail = |e: String| kernel(format!("cannot list set {set} of table inet {table}: {e}"));
        let mut seen = Vec::new();
        for attempt in 0..DUMP_TRIES {
            if attempt > 0 {
                std::thread::sleep(DUMP_RETRY_WAIT * (1 << (attempt - 1)));
            }
            seen.clear();
            let end = self
                .dump(
                    |out, seq| codec::get_set_elements(out, seq, table, set),
                    |m| {
                        if m.kind == codec::NEWSETELEM_TYPE {
                            codec::for_each_element(m, |e| seen.push(e))
                        }
                    },
                )
                .map_err(fail)?;
            match end {
                Dumped::Missing => return Ok(None),
                Dumped::Interrupted => continue,
                Dumped::Whole => {
                    if let Some(t) = make(&seen) {
                        return Ok(Some(t));
                    }
                }
            }
        }
        Err(fail(format!(
            "the set changed or was resized during each of {DUMP_TRIES} listings"
        )))
    }

    /// The packets named counter `name` of table `inet <table>` has counted; `Ok(None)` when
    /// there is no such counter.
    pub fn counter(&mut self, table: &str, name: &str) -> Result<Option<u64>, NftError> {
        self.ready()?;
        let mut packets = None;
        self.dump(
            |out, seq| structure::request(out, seq, structure::NFT_MSG_GETOBJ, table),
            |m| {
                if let Some(p) = structure::counter_packets(m, table, name) {
                    packets = Some(p);
                }
            },
        )
        .map_err(|e| kernel(format!("cannot read counter {name} of table inet {table}: {e}")))?;
        Ok(packets)
    }

    /// Sends the dump request `request` writes and hands `each` every message answering it,
    /// until the dump's end.
    fn dump(
        &mut self,
        request: impl FnOnce(&mut Vec<u8>, u32),
        mut each: impl FnMut(&codec::Msg<'_>),
    ) -> Result<Dumped, String> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        request(&mut self.out, seq);
        self.sock.send(&self.out, 0).map_err(|e| e.to_string())?;
        let mut interrupted = false;
        // Until the dump's end: the kernel writes the next piece as each one is read.
        loop {
            let n = match self.sock.recv(&mut &mut self.buf[..], libc::MSG_TRUNC) {
                Ok(n) if n > self.buf.len() => {
                    self.dirty = true;
                    return Err(format!("a {n}-byte answer overflowed the buffer"));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.dirty = true;
                    return Err(if e.kind() == io::ErrorKind::WouldBlock {
                        format!("the kernel did not answer within {} s", RECV_TIMEOUT.as_secs())
                    } else {
                        e.to_string()
                    });
                }
            };
            crate::base::pace::breathe();
            for m in codec::messages(&self.buf[..n]) {
                if m.seq != seq {
                    continue;
                }
                interrupted |= m.flags & codec::NLM_F_DUMP_INTR != 0;
                match m.kind {
                    codec::NLMSG_DONE => {
                        return match codec::done_errno(&m) {
                            0 if interrupted => Ok(Dumped::Interrupted),
                            0 => Ok(Dumped::Whole),
                            errno => Err(io::Error::from_raw_os_error(errno).to_string()),
                        }
                    }
                    codec::NLMSG_ERROR => match codec::answer(&m).map(|a| a.errno) {
                        Some(0) | None => {}
                        Some(libc::ENOENT) => return Ok(Dumped::Missing),
                        Some(errno) => return Err(io::Error::from_raw_os_error(errno).to_string()),
                    },
                    _ => each(&m),
                }
            }
        }
    }

    /// Table `inet <table>`'s sets, chains and rules' comments, read by three dumps (`nft` would
    /// read every set's elements as well: most of a second at 200,000). `Ok(None)` when the
    /// table does not exist.
    pub fn structure(&mut self, table: &str) -> Result<Option<structure::Structure>, NftError> {
        self.ready()?;
        let fail = |e: String| kernel(format!("cannot list table inet {table}: {e}"));
        for attempt in 0..DUMP_TRIES {
            if attempt > 0 {
                std::thread::sleep(DUMP_RETRY_WAIT * (1 << (attempt - 1)));
            }
            let mut found = structure::Structure::default();
            let mut whole = true;
            for kind in structure::KINDS {
                let end = self
                    .dump(
                        |out, seq| structure::request(out, seq, kind, table),
                        |m| found.take(m, table),
                    )
                    .map_err(fail)?;
                match end {
                    Dumped::Missing => return Ok(None),
                    Dumped::Interrupted => whole = false,
                    Dumped::Whole => {}
                }
            }
            if !whole {
                continue;
            }
            return Ok(found.table_seen.then_some(found));
        }
        Err(fail(format!(
            "the ruleset changed during each of {DUMP_TRIES} listings"
        )))
    }
}

/// How a dump ended.
enum Dumped {
    Whole,
    /// A change in the middle: the kernel marked the pieces, the listing may be off.
    Interrupted,
    /// No such table or set.
    Missing,
}

/// The kernel's refusals in words: per set and reason, which operation on how many elements.
/// The three passes of one change refuse alike, so each set and reason is told once, by the
/// first pass it failed in.
fn refused(table: &str, sent: &[Sent<'_>], refusals: &[Refusal]) -> NftError {
    struct Group<'a> {
        sent: Option<&'a Sent<'a>>,
        count: usize,
        errno: i32,
        text: Option<&'a str>,
    }
    let mut groups: Vec<Group<'_>> = Vec::new();
    for r in refusals {
        let s = sent
            .binary_search_by_key(&r.seq, |s| s.seq)
            .ok()
            .or_else(|| sent.iter().position(|s| s.seq == r.seq))
            .map(|i| &sent[i]);
        let text = r.text.as_deref();
        let same = groups
            .iter_mut()
            .find(|g| g.errno == r.errno && g.text == text && g.sent.map(|g| g.set) == s.map(|s| s.set));
        match (same, s) {
            (Some(g), Some(s)) => {
                if g.sent.is_some_and(|g| g.pass == s.pass && g.op == s.op) {
                    g.count += s.count;
                }
            }
            (Some(_), None) => {}
            (None, _) => groups.push(Group {
                sent: s,
                count: s.map_or(0, |s| s.count),
                errno: r.errno,
                text,
            }),
        }
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|g| {
            let what = match g.sent {
                Some(s) => match s.op {
                    Op::Add => format!(
                        "adding {} element(s) to set {} of table inet {table}",
                        g.count, s.set
                    ),
                    Op::Delete => format!(
                        "deleting {} element(s) from set {} of table inet {table}",
                        g.count, s.set
                    ),
                    Op::Flush => format!("flushing set {} of table inet {table}", s.set),
                },
                None => format!("the batch for table inet {table}"),
            };
            let why = io::Error::from_raw_os_error(g.errno);
            match g.text {
                Some(t) => format!("{what}: {why} ({t})"),
                None => format!("{what}: {why}"),
            }
        })
        .collect();
    kernel(format!("the kernel refused {}", parts.join("; ")))
}

#[cfg(test)]
mod tests;
