//! The table's read-back, off the engine's thread: a pass reads the kernel's table and the store's
//! live grants and bans (through a connection of its own), compares them, and either rebuilds the
//! table whole or hands the engine the element fixes to apply. The engine never waits on it; it
//! drops from a fix every address it changed while the pass ran, since its own change put that
//! address right after the pass had looked.

use std::net::IpAddr;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::command::{Reply, TableStatus};
use super::ports::{LiveRead, Readback};
use crate::base::clock::{Clock, Now, UnixMs};
use crate::base::lock::lock;
use crate::base::pace;
use crate::config::Config;
use crate::nft::desired::Gather;
use crate::nft::{Changes, Desired, Elements, Layout, TableState};
use crate::store::StoreError;

/// One pass the engine asks for.
pub struct PassRequest {
    /// The config in force when it was asked (a reload hands a new one).
    pub config: Arc<Config>,
    pub now: Now,
    pub kind: PassKind,
}

pub enum PassKind {
    /// Bring the table in line: rebuild it here, or report the fixes for the engine to apply.
    Repair,
    /// Only look, for `status`: fills in the table's side of `status` and answers the asker.
    Check(Box<TableStatus>, Reply<TableStatus>),
}

/// What a repair pass found and did.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    InSync,
    /// Elements to set or remove, for the engine to apply (minus what it changed meanwhile).
    Fix(Changes),
    /// The table was missing or not ours; this pass built it whole from the store.
    Rebuilt {
        reason: String,
        elements: usize,
    },
}

/// A repair pass's answer to the engine.
#[derive(Debug)]
pub struct PassOutcome {
    pub result: Result<Checked, String>,
}

/// The read-back's own connection to the store and its own handle on the table.
pub struct Checker<L: LiveRead, K: Readback> {
    pub reader: L,
    pub kernel: K,
    pub clock: Arc<Mutex<Clock>>,
    pub heap: Heap,
}

impl<L: LiveRead, K: Readback> Checker<L, K> {
    /// Runs one pass; a check answers its asker itself and gives the engine nothing.
    pub fn pass(&mut self, req: PassRequest) -> Option<PassOutcome> {
        let (outcome, elements) = pass(&self.reader, &mut self.kernel, &self.clock, req);
        if elements.is_some_and(|n| self.heap.after_pass(n)) {
            give_back_memory();
        }
        outcome
    }
}

/// The memory a pass builds (tens of megabytes for 100,000 grants) and drops. It is kept for the
/// next pass, which needs as much again. Handed back after every pass, it was faulted in again by
/// the next, and grants made meanwhile were held: the worst of figure 6's took 5-9 ms with the
/// trim and 2-5 ms without (the trim's madvise calls hold the address space, which the daemon's
/// other threads need to map memory). It goes back once the table has shrunk below half of what
/// it was kept for.
#[derive(Debug, Default)]
pub struct Heap {
    /// The most elements a pass has handled since memory last went back.
    kept_for: usize,
}

impl Heap {
    /// Takes a pass's element count; true when the memory kept should go back now.
    pub fn after_pass(&mut self, elements: usize) -> bool {
        if elements.saturating_mul(2) < self.kept_for {
            self.kept_for = elements;
            true
        } else {
            self.kept_for = self.kept_for.max(elements);
            false
        }
    }
}

/// Hands the heap's free pages back to the OS.
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs passes as the engine asks until it goes, sending each repair's outcome back. The engine
/// looks for outcomes while a pass runs; this thread holds no handle that would keep it alive.
pub fn serve<L: LiveRead, K: Readback>(
    mut checker: Checker<L, K>,
    asks: Receiver<PassRequest>,
    outcomes: Sender<PassOutcome>,
) {
    // A pass is background work: it rests every half millisecond, so a thread woken meanwhile
    // (the engine's, a client's) gets the core at once.
    crate::base::pace::on();
    for req in asks {
        if let Some(outcome) = checker.pass(req) {
            if outcomes.send(outcome).is_err() {
                return;
            }
        }
    }
}

/// The engine's two ends of its link to the read-back's thread.
pub struct Link {
    pub passes: Sender<PassRequest>,
    pub outcomes: Receiver<PassOutcome>,
}

/// One pass over `reader` and `kernel`, and how many elements the table held (`None` when the
/// pass failed). The kernel is read before the store: an element the engine adds in between is
/// then wanted but unseen (set again, harmlessly), never seen but unwanted.
pub fn pass(
    reader: &dyn LiveRead,
    kernel: &mut dyn Readback,
    clock: &Mutex<Clock>,
    req: PassRequest,
) -> (Option<PassOutcome>, Option<usize>) {
    kernel.reconfigure(&req.config);
    // The standing entries are the store's, like the grants: read with them.
    if let Ok((entries, names)) = reader.standing() {
        let nets = crate::nft::standing_nets(kernel.layout(), &entries, &names);
        kernel.take_standing(nets);
    }
    let started = Instant::now();
    let now = req.now;
    match req.kind {
        PassKind::Check(mut status, reply) => {
            let found = desired(reader, kernel.layout(), clock, now)
                .map_err(|e| e.to_string())
                .and_then(|d| {
                    let c = kernel.compare(d.elements(), now.wall);
                    pace::drop_paced(Elements::from(d));
                    c.map_err(|e| e.to_string())
                });
            let elements = found.as_ref().ok().map(|c| c.elements);
            match found {
                Ok(c) => {
                    status.table_present = c.present;
                    status.in_sync = c.verdict == TableState::InSync;
                    status.sip_rate_drops = kernel.sip_rate_drops();
                    status.elements = c.elements;
                    status.sync_detail = match &c.verdict {
                        TableState::InSync => String::new(),
                        TableState::Fix(changes) => format!(
                            "{} element(s) to set, {} to remove",
                            changes.set.len(),
                            changes.remove.len()
                        ),
                        TableState::Rebuild(why) => why.clone(),
                    };
                }
                Err(e) => {
                    status.table_present = false;
                    status.in_sync = false;
                    status.sync_detail = e;
                }
            }
            let _ = reply.send(Ok(*status));
            (None, elements)
        }
        PassKind::Repair => {
            let result = repair(reader, kernel, clock, now);
            crate::observe::metrics::METRICS.sip_rate_drops(kernel.sip_rate_drops());
            let elements = result.as_ref().ok().map(|(_, n)| *n);
            if let Some(n) = elements {
                crate::observe::metrics::METRICS.reconciled(started.elapsed(), n);
            }
            let outcome = PassOutcome {
                result: result.map(|(c, _)| c),
            };
            (Some(outcome), elements)
        }
    }
}

/// Compares, and rebuilds when the table is missing or not ours. Returns what it found and how
/// many elements the table held.
fn repair(
    reader: &dyn LiveRead,
    kernel: &mut dyn Readback,
    clock: &Mutex<Clock>,
    now: Now,
) -> Result<(Checked, usize), String> {
    let wanted = desired(reader, kernel.layout(), clock, now).map_err(|e| e.to_string())?;
    let found = compare_or_rebuild(kernel, &wanted, now);
    pace::drop_paced(Elements::from(wanted));
    found
}

fn compare_or_rebuild(
    kernel: &mut dyn Readback,
    wanted: &Desired,
    now: Now,
) -> Result<(Checked, usize), String> {
    let c = kernel
        .compare(wanted.elements(), now.wall)
        .map_err(|e| e.to_string())?;
    Ok(match c.verdict {
        TableState::InSync => (Checked::InSync, c.elements),
        TableState::Fix(changes) => (Checked::Fix(changes), c.elements),
        TableState::Rebuild(reason) => {
            kernel
                .rebuild(wanted.elements(), now.wall)
                .map_err(|e| e.to_string())?;
            (
                Checked::Rebuilt {
                    reason,
                    elements: wanted.len(),
                },
                wanted.len(),
            )
        }
    })
}

/// The whole table the store wants at `now`. The clock is shared with the engine: the rows are
/// read from the store without it, [`CLOCK_ROWS`] at a time, and the clock is taken only to work
/// out their ends. Held while rows are read, it would be given back and taken again between two
/// rows before the engine woken for it could run, and a grant would wait out the whole listing.
pub fn desired(
    reader: &dyn LiveRead,
    layout: &Layout,
    clock: &Mutex<Clock>,
    now: Now,
) -> Result<Desired, StoreError> {
    let bans = reader.live_bans(now.wall)?;
    let mut out = Gather::new(layout);
    {
        let mut clock = lock(clock);
        for b in &bans {
            if let Some(end) = clock.end(b.address, b.expires, now) {
                out.ban(b.address, end);
            }
        }
    }
    // Each distinct list of services once (a table has a handful); rows point into it.
    let mut lists: Vec<String> = Vec::new();
    let mut rows: Vec<(IpAddr, usize, UnixMs)> = Vec::with_capacity(CLOCK_ROWS);
    let mut ends = |rows: &mut Vec<(IpAddr, usize, UnixMs)>, lists: &[String]| {
        let mut clock = lock(clock);
        for (ip, list, end) in rows.drain(..) {
            if let Some(end) = clock.end(ip, end, now) {
                out.grant(ip, lists[list].split(','), end);
            }
        }
    };
    reader.for_each_live(now.wall, &mut |ip, services, end| {
        crate::base::pace::breathe();
        let list = match lists.iter().position(|l| l == services) {
            Some(i) => i,
            None => {
                lists.push(services.to_string());
                lists.len() - 1
            }
        };
        rows.push((ip, list, end));
        if rows.len() == CLOCK_ROWS {
            ends(&mut rows, &lists);
        }
    })?;
    ends(&mut rows, &lists);
    Ok(out.finish())
}

/// Rows whose ends are worked out under one taking of the shared clock.
const CLOCK_ROWS: usize = 256;
