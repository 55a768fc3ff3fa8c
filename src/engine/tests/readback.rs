//! The read-back off the engine's thread and batched bans: a pass's fixes leave alone what the
//! engine changed while it ran, a rebuild from an older snapshot is put right for those addresses,
//! `status` and `reload` are answered by the pass, and a flood of bans costs one transaction and
//! one batch to the kernel.

use super::*;
use crate::engine::checker::{Checked, PassOutcome};

const A: &str = "203.0.113.7";
const B: &str = "203.0.113.8";
const C: &str = "203.0.113.9";

impl Rig {
    /// Asks for a repair pass at `ms` and runs it against the store and table as they are now,
    /// but keeps its outcome back: the engine goes on as if the pass were still running.
    fn pass_in_flight(&mut self, ms: i64) -> PassOutcome {
        let now = self.at(ms);
        self.engine.wake(now);
        let e = &mut self.engine;
        let req = e.passes.pop().expect("a repair pass is due");
        assert!(e.passes.is_empty());
        checker::pass(&e.store, &mut e.firewall, &e.clock, req)
            .0
            .expect("a repair has an outcome")
    }

    fn outcome(&mut self, ms: i64, outcome: PassOutcome) -> Result<crate::nft::Reconciled, String> {
        let now = self.at(ms);
        let r = self.engine.checked(outcome, now);
        self.drain(now);
        r
    }
}

#[test]
fn a_fix_leaves_alone_what_the_engine_changed_while_the_pass_ran() {
    let mut rig = Rig::new();
    rig.grant(0, A, None).unwrap();
    rig.grant(0, B, None).unwrap();
    // Someone empties the table; the pass sees both missing and would set both.
    rig.table().elements.as_mut().unwrap().clear();
    let outcome = rig.pass_in_flight(60 * SEC);
    match &outcome.result {
        Ok(Checked::Fix(c)) => assert_eq!(c.set.len(), 2, "{c:?}"),
        other => panic!("{other:?}"),
    }
    // Meanwhile A is revoked: its fix is stale and must not put A back.
    rig.one(60 * SEC + 100, |r| Command::Revoke(ip(A), r)).unwrap();
    let r = rig.outcome(60 * SEC + 200, outcome).unwrap();
    assert_eq!(r, crate::nft::Reconciled::Fixed { set: 1, removed: 0 });
    assert!(!rig.table().has(ip(A)), "the revoked address stays out");
    assert!(rig.table().has(ip(B)), "the other is put back");
}

#[test]
fn a_rebuild_from_an_older_snapshot_is_put_right_for_what_changed_meanwhile() {
    let mut rig = Rig::new();
    rig.grant(0, A, None).unwrap();
    rig.grant(0, B, None).unwrap();
    let before = rig.table().elements.clone().unwrap();
    rig.table().elements = None;
    let outcome = rig.pass_in_flight(60 * SEC);
    assert!(
        matches!(outcome.result, Ok(Checked::Rebuilt { .. })),
        "{outcome:?}"
    );
    // While the rebuild was on its way, C was granted and B revoked; the rebuild then lands
    // with the snapshot it was built from (A and B, no C).
    rig.grant(60 * SEC + 100, C, None).unwrap();
    rig.one(60 * SEC + 100, |r| Command::Revoke(ip(B), r)).unwrap();
    rig.table().elements = Some(before);
    rig.outcome(60 * SEC + 200, outcome).unwrap();
    assert!(rig.table().has(ip(A)));
    assert!(!rig.table().has(ip(B)), "the revoke made meanwhile holds");
    assert!(rig.table().has(ip(C)), "the grant made meanwhile holds");
}

#[test]
fn one_pass_at_a_time_and_a_second_follows_when_asked_meanwhile() {
    let mut rig = Rig::new();
    rig.grant(0, A, None).unwrap();
    let outcome = rig.pass_in_flight(60 * SEC);
    // A failed change while the pass runs asks for another pass once this one is back.
    rig.table().fail = true;
    rig.grant(60 * SEC + 10, B, None).unwrap();
    rig.table().fail = false;
    rig.engine.wake(rig.at(61 * SEC));
    assert!(rig.engine.passes.is_empty(), "no second pass while one runs");
    rig.outcome(61 * SEC + 10, outcome).unwrap();
    assert!(rig.table().has(ip(B)), "the pass that followed put B in");
}

#[test]
fn status_is_answered_by_the_read_back_and_reload_after_its_rebuild() {
    let mut rig = Rig::new();
    rig.grant(0, A, None).unwrap();
    let (status, rx) = job(Command::Status);
    rig.engine.handle(vec![status], rig.at(SEC));
    let mut rx = rx;
    assert!(
        rx.try_recv().is_err(),
        "the engine does not read the table back itself"
    );
    rig.drain(rig.at(SEC));
    let st = answer(rx).unwrap();
    assert!(st.in_sync && st.table_present, "{st:?}");
    assert_eq!(st.firewall_path, "memory");

    let config = Config::parse(CONFIG, "t").unwrap();
    let (reload, rx) = job(|r| Command::Reload(Box::new(config), r));
    rig.engine.handle(vec![reload], rig.at(2 * SEC));
    let mut rx = rx;
    assert!(rx.try_recv().is_err(), "answered by the pass, not before it");
    rig.drain(rig.at(2 * SEC));
    assert!(answer(rx).unwrap().table.is_ok());
}

#[test]
fn a_flood_of_bans_costs_one_transaction_and_one_batch() {
    let mut rig = Rig::new();
    let (tx0, nft0) = (rig.store().transactions, rig.table().batches);
    let mut asks: Vec<_> = (0..200u32)
        .map(|i| job(|r| Command::Ban(ban_ask(&format!("198.51.100.{}", i % 250 + 1), None), r)))
        .collect();
    // One of them is trusted: refused, and the rest go ahead.
    asks.push(job(|r| Command::Ban(ban_ask("192.0.2.1", None), r)));
    let (jobs, answers): (Vec<_>, Vec<_>) = asks.into_iter().unzip();
    rig.batch(SEC, jobs);
    let results: Vec<_> = answers.into_iter().map(answer).collect();
    assert!(results[..200].iter().all(|r| r.is_ok()));
    assert!(results[200].as_ref().unwrap_err().0.contains("trusted"));
    assert_eq!(rig.store().transactions - tx0, 1, "one store transaction");
    assert_eq!(rig.table().batches - nft0, 1, "one batch to the kernel");
    assert_eq!(rig.store().bans.len(), 200);
}

#[test]
fn bans_and_grants_in_one_queue_keep_their_order() {
    let mut rig = Rig::new();
    let (ban, b) = job(|r| Command::Ban(ban_ask(A, None), r));
    let (grant, g) = job(|r| Command::Grant(grant_ask(A, &[], None), r));
    let (unban, u) = job(|r| Command::Unban(ip(A), r));
    rig.batch(SEC, vec![ban, grant, unban]);
    answer(b).unwrap();
    assert!(
        answer(g).unwrap().warning.is_some(),
        "granted after the ban: warned"
    );
    answer(u).unwrap();
    assert!(rig.store().bans.is_empty());
}

/// A store of `n` live grants that, before it hands over each row, asks whether the engine could
/// take the clock now.
struct Watching<'c> {
    n: u32,
    clock: &'c std::sync::Mutex<crate::base::clock::Clock>,
    held: std::cell::Cell<u32>,
}

impl crate::engine::ports::LiveRead for Watching<'_> {
    fn for_each_live(
        &self,
        now: UnixMs,
        f: &mut dyn FnMut(IpAddr, &str, UnixMs),
    ) -> Result<(), crate::store::StoreError> {
        for i in 0..self.n {
            if self.clock.try_lock().is_err() {
                self.held.set(self.held.get() + 1);
            }
            let ip = IpAddr::from([10, 1, (i >> 8) as u8, i as u8]);
            f(ip, "sip,rtp", now + HOUR);
        }
        Ok(())
    }

    fn live_bans(&self, _: UnixMs) -> Result<Vec<crate::model::Ban>, crate::store::StoreError> {
        Ok(Vec::new())
    }
}

#[test]
fn the_read_back_never_holds_the_engine_s_clock_while_it_reads_the_store() {
    let rig = Rig::new();
    let clock = rig.engine.clock();
    let store = Watching {
        n: 3000,
        clock: &clock,
        held: 0.into(),
    };
    let layout = crate::nft::Layout::from_config(&rig.engine.config);
    let wanted = checker::desired(&store, &layout, &clock, rig.at(0)).unwrap();
    assert_eq!(store.held.get(), 0, "rows read with the clock taken");
    // Every row is there all the same, in both its services' sets.
    assert_eq!(wanted.len(), 6000);
}

#[test]
fn the_read_back_keeps_its_memory_for_the_next_pass_and_hands_it_back_when_the_table_shrinks() {
    let mut heap = checker::Heap::default();
    assert!(!heap.after_pass(200_000), "the first pass keeps what it built");
    assert!(!heap.after_pass(200_000), "a pass as big again: kept");
    assert!(!heap.after_pass(120_000), "somewhat smaller: kept");
    assert!(heap.after_pass(90_000), "below half of 200,000: handed back");
    assert!(!heap.after_pass(90_000), "kept for 90,000 now");
    assert!(!heap.after_pass(300_000), "grown: kept for the bigger table");
    assert!(heap.after_pass(0), "emptied");
    assert!(!heap.after_pass(0));
}
