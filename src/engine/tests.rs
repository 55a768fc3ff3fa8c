//! The engine's rules, run against the in-memory store and table: batching, ordering, holds,
//! expiry, the retry after an nft failure, and refusals. Time is passed in, so nothing sleeps;
//! nothing needs root.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::checker;
use super::command::*;
use super::fakes::{FakeStore, FakeTable};
use super::Engine;
use crate::base::clock::{Now, UnixMs};
use crate::base::duration::Ttl;
use crate::base::secret::DisaKey;
use crate::config::Config;
use crate::model::Source;

mod auth_grants;
mod owners;
mod readback;
mod remote;
mod standing;

const W0: UnixMs = 1_795_248_830_000;
const SEC: i64 = 1000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;

const CONFIG: &str = r#"
[services.sip]
ports = ["udp/5060"]

[services.rtp]
ports = ["udp/10000-20000"]

[grants]
default-services = ["sip"]
ttl-default = "1h"
ttl-max = "4h"

[firewall]
trusted = ["192.0.2.0/24"]

[ami]
hold-max = "1h"
"#;

/// An engine over the fakes, started at `W0`, with the clocks under the test's hand.
struct Rig {
    engine: Engine<FakeStore, FakeTable>,
    t0: Instant,
}

impl Rig {
    fn new() -> Rig {
        Rig::with(CONFIG)
    }

    fn with(config: &str) -> Rig {
        let config = Config::parse(config, "test").unwrap();
        let t0 = Instant::now();
        let table = FakeTable::new(&config);
        let start = Now { wall: W0, mono: t0 };
        let mut engine = Engine::new(config, FakeStore::default(), table, start);
        engine.set_disa_key(Arc::new(DisaKey::from_bytes([7; 32])));
        engine.start(start);
        let mut rig = Rig { engine, t0 };
        rig.drain(start);
        rig
    }

    /// `ms` after the start on both clocks.
    fn at(&self, ms: i64) -> Now {
        Now {
            wall: W0 + ms,
            mono: self.t0 + Duration::from_millis(ms as u64),
        }
    }

    fn store(&self) -> &FakeStore {
        &self.engine.store
    }

    fn table(&mut self) -> &mut FakeTable {
        &mut self.engine.firewall
    }

    /// Runs the read-back's passes the engine asked for, here and now, as its thread would.
    fn drain(&mut self, now: Now) {
        let e = &mut self.engine;
        while !e.passes.is_empty() {
            for req in std::mem::take(&mut e.passes) {
                if let (Some(outcome), _) = checker::pass(&e.store, &mut e.firewall, &e.clock, req) {
                    let _ = e.checked(outcome, now);
                }
            }
        }
    }

    /// Runs one batch at `ms`.
    fn batch(&mut self, ms: i64, jobs: Vec<Job>) {
        let now = self.at(ms);
        self.engine.handle(jobs, now);
        self.drain(now);
    }

    /// Runs one command alone at `ms` and returns its answer.
    fn one<T>(&mut self, ms: i64, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, Refused> {
        let (job, rx) = job(command);
        self.batch(ms, vec![job]);
        answer(rx)
    }

    fn grant(&mut self, ms: i64, address: &str, ttl: Option<&str>) -> Result<Granted, Refused> {
        self.one(ms, |r| Command::Grant(grant_ask(address, &[], ttl), r))
    }

    fn wake(&mut self, ms: i64) {
        let now = self.at(ms);
        self.engine.wake(now);
        self.drain(now);
    }

    fn live_grants(&self, ms: i64, address: &str) -> usize {
        self.store()
            .grants
            .iter()
            .filter(|g| g.address == ip(address) && g.end() > W0 + ms)
            .count()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ttl(s: &str) -> Ttl {
    s.parse().unwrap()
}

fn grant_ask(address: &str, services: &[&str], t: Option<&str>) -> GrantAsk {
    GrantAsk {
        address: ip(address),
        services: Services::from_names(&services.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        ttl: t.map(ttl),
        note: String::new(),
        owner: None,
    }
}

fn ban_ask(address: &str, t: Option<&str>) -> BanAsk {
    BanAsk {
        address: ip(address),
        ttl: t.map(ttl),
        reason: "test".into(),
    }
}

fn job<T>(command: impl FnOnce(Reply<T>) -> Command) -> (Job, oneshot::Receiver<Result<T, Refused>>) {
    let (tx, rx) = oneshot::channel();
    let job = Job {
        arrived: Instant::now(),
        actor: Actor::new("uid 0", Source::Admin),
        command: command(tx),
    };
    (job, rx)
}

fn answer<T>(mut rx: oneshot::Receiver<Result<T, Refused>>) -> Result<T, Refused> {
    rx.try_recv().expect("every command is answered within its batch")
}

#[test]
fn a_batch_of_grants_costs_one_transaction_and_one_nft_batch() {
    let mut rig = Rig::new();
    let (tx0, nft0) = (rig.store().transactions, rig.table().batches);
    let (jobs, answers): (Vec<_>, Vec<_>) = (0..50)
        .map(|i| {
            job(|r| {
                Command::Grant(
                    grant_ask(&format!("203.0.113.{}", i + 1), &["sip", "rtp"], None),
                    r,
                )
            })
        })
        .unzip();
    rig.batch(SEC, jobs);
    for a in answers {
        let g = answer(a).unwrap();
        assert_eq!(g.firewall, TableChange::default());
        assert_eq!(g.grant.services, ["sip", "rtp"]);
    }
    assert_eq!(rig.store().transactions - tx0, 1, "one store transaction");
    assert_eq!(rig.table().batches - nft0, 1, "one nft batch");
    assert_eq!(rig.store().grants.len(), 50);
    assert_eq!(rig.table().elements.as_ref().unwrap().len(), 100);
}

#[test]
fn a_refused_grant_does_not_hold_up_the_rest_of_its_batch() {
    let mut rig = Rig::new();
    let tx0 = rig.store().transactions;
    let (good, good_rx) = job(|r| Command::Grant(grant_ask("203.0.113.7", &[], None), r));
    let (bad, bad_rx) = job(|r| Command::Grant(grant_ask("203.0.113.8", &["ssh"], None), r));
    let (good2, good2_rx) = job(|r| Command::Grant(grant_ask("203.0.113.9", &[], None), r));
    rig.batch(SEC, vec![good, bad, good2]);
    assert!(answer(good_rx).is_ok());
    assert!(answer(good2_rx).is_ok());
    let e = answer(bad_rx).unwrap_err();
    assert_eq!(e.0, "unknown service `ssh`; the config defines: rtp, sip");
    assert_eq!(rig.store().transactions - tx0, 1);
    assert_eq!(rig.store().grants.len(), 2);
}

#[test]
fn a_revoke_after_a_grant_in_one_batch_wins() {
    let mut rig = Rig::new();
    let (g, g_rx) = job(|r| Command::Grant(grant_ask("203.0.113.7", &["sip", "rtp"], None), r));
    let (v, v_rx) = job(|r| Command::Revoke(ip("203.0.113.7"), r));
    rig.batch(SEC, vec![g, v]);
    assert!(answer(g_rx).is_ok());
    assert_eq!(answer(v_rx).unwrap().grants, 1);
    assert!(rig.store().grants.is_empty());
    assert!(
        !rig.table().has(ip("203.0.113.7")),
        "the revoke took the elements out"
    );
}

#[test]
fn a_grant_after_a_revoke_in_one_batch_stands() {
    let mut rig = Rig::new();
    rig.grant(0, "203.0.113.7", None).unwrap();
    let (v, v_rx) = job(|r| Command::Revoke(ip("203.0.113.7"), r));
    let (g, g_rx) = job(|r| Command::Grant(grant_ask("203.0.113.7", &[], None), r));
    rig.batch(SEC, vec![v, g]);
    assert_eq!(answer(v_rx).unwrap().grants, 1);
    assert!(answer(g_rx).is_ok());
    assert_eq!(rig.live_grants(SEC, "203.0.113.7"), 1);
    assert!(rig.table().has(ip("203.0.113.7")));
}

#[test]
fn an_ending_grant_takes_out_only_what_no_other_grant_opens() {
    let mut rig = Rig::new();
    rig.one(0, |r| {
        Command::Grant(grant_ask("203.0.113.7", &["sip", "rtp"], None), r)
    })
    .unwrap();
    rig.one(0, |r| {
        Command::Grant(grant_ask("203.0.113.7", &["sip"], Some("2h")), r)
    })
    .unwrap();
    assert_eq!(rig.table().count(ip("203.0.113.7")), 2);
    // The first grant (1 h, sip and rtp) ends; the second (2 h, sip) keeps sip open.
    rig.wake(HOUR);
    assert_eq!(rig.live_grants(HOUR, "203.0.113.7"), 1);
    assert_eq!(rig.table().count(ip("203.0.113.7")), 1, "rtp went, sip stays");
}

#[test]
fn a_ban_of_a_granted_address_keeps_both_and_a_later_grant_is_warned() {
    let mut rig = Rig::new();
    rig.grant(0, "203.0.113.7", None).unwrap();
    let (b, b_rx) = job(|r| Command::Ban(ban_ask("203.0.113.7", Some("30m")), r));
    let (g, g_rx) = job(|r| Command::Grant(grant_ask("203.0.113.7", &[], None), r));
    rig.batch(SEC, vec![b, g]);
    let banned = answer(b_rx).unwrap();
    assert_eq!(banned.ban.expires, W0 + SEC + 30 * MIN);
    let granted = answer(g_rx).unwrap();
    let warning = granted.warning.expect("the grant says the ban wins");
    assert!(warning.contains("is banned for another 30m"), "{warning}");
    // Allow element and ban element side by side: the table's rule order lets the ban win.
    assert_eq!(rig.table().count(ip("203.0.113.7")), 2);
    assert_eq!(rig.store().bans.len(), 1);
}

#[test]
fn a_ban_ends_on_time_and_an_unban_lifts_it_at_once() {
    let mut rig = Rig::new();
    rig.one(0, |r| Command::Ban(ban_ask("203.0.113.66", Some("10m")), r))
        .unwrap();
    rig.one(0, |r| Command::Ban(ban_ask("203.0.113.67", Some("10m")), r))
        .unwrap();
    let u = rig.one(SEC, |r| Command::Unban(ip("203.0.113.67"), r)).unwrap();
    assert_eq!(u.firewall, TableChange::default());
    assert!(!rig.table().has(ip("203.0.113.67")));
    assert!(rig
        .one(SEC, |r| Command::Unban(ip("203.0.113.67"), r))
        .unwrap_err()
        .0
        .contains("is not banned"));
    rig.wake(10 * MIN - 1);
    assert!(rig.table().has(ip("203.0.113.66")));
    rig.wake(10 * MIN);
    assert!(rig.store().bans.is_empty());
    assert!(!rig.table().has(ip("203.0.113.66")));
}

#[test]
fn expiry_removes_rows_and_elements_at_their_end_and_not_before() {
    let mut rig = Rig::new();
    rig.grant(0, "203.0.113.7", Some("1h")).unwrap();
    rig.wake(HOUR - 1);
    assert_eq!(rig.store().grants.len(), 1);
    assert!(rig.table().has(ip("203.0.113.7")));
    rig.wake(HOUR);
    assert!(rig.store().grants.is_empty());
    assert!(!rig.table().has(ip("203.0.113.7")));
}

#[test]
fn the_engine_wakes_for_the_next_end() {
    let mut rig = Rig::new();
    rig.grant(0, "203.0.113.7", Some("30s")).unwrap();
    // The end in 20 s comes before the reconcile in 50 s.
    let wait = rig.engine.until_next_wake(rig.at(10 * SEC));
    assert_eq!(wait, Duration::from_secs(20));
    rig.wake(30 * SEC);
    assert_eq!(
        rig.engine.until_next_wake(rig.at(30 * SEC)),
        Duration::from_secs(30)
    );
}

#[test]
fn a_hold_keeps_a_grant_past_its_expiry_until_released() {
    let mut rig = Rig::new();
    rig.grant(0, "203.0.113.7", Some("1h")).unwrap();
    let held = rig
        .one(30 * MIN, |r| Command::Hold(ip("203.0.113.7"), W0 + 90 * MIN, r))
        .unwrap();
    assert_eq!(held.end, Some(W0 + 90 * MIN));
    rig.wake(HOUR + SEC);
    assert_eq!(rig.live_grants(HOUR + SEC, "203.0.113.7"), 1, "held past its TTL");
    assert!(rig.table().has(ip("203.0.113.7")));
    // The call ends: the grant is past its own expiry, so it ends now.
    let released = rig
        .one(HOUR + 2 * SEC, |r| Command::Release(ip("203.0.113.7"), r))
        .unwrap();
    assert_eq!(released.grants, 0);
    assert!(rig.store().grants.is_empty());
    assert!(!rig.table().has(ip("203.0.113.7")));
}

#[test]
fn a_hold_is_capped_at_hold_max_past_the_grant_s_expiry() {
    let mut rig = Rig::new();
    rig.grant(0, "203.0.113.7", Some("1h")).unwrap();
    let held = rig
        .one(MIN, |r| Command::Hold(ip("203.0.113.7"), W0 + 10 * HOUR, r))
        .unwrap();
    assert_eq!(held.end, Some(W0 + 2 * HOUR), "ami.hold-max is 1h");
    rig.wake(2 * HOUR - 1);
    assert_eq!(rig.store().grants.len(), 1);
    rig.wake(2 * HOUR);
    assert!(rig.store().grants.is_empty());
    assert!(!rig.table().has(ip("203.0.113.7")));
}

#[test]
fn a_hold_that_changes_nothing_writes_nothing() {
    let mut rig = Rig::new();
    rig.grant(0, "203.0.113.7", Some("2h")).unwrap();
    let (tx0, nft0) = (rig.store().transactions, rig.table().batches);
    let held = rig
        .one(MIN, |r| Command::Hold(ip("203.0.113.7"), W0 + 10 * MIN, r))
        .unwrap();
    assert_eq!(held.end, Some(W0 + 2 * HOUR));
    assert_eq!(rig.store().transactions, tx0);
    assert_eq!(rig.table().batches, nft0);
}

#[test]
fn after_an_nft_failure_the_store_keeps_the_grant_and_the_next_wake_repairs_the_table() {
    let mut rig = Rig::new();
    rig.table().fail = true;
    let g = rig.grant(0, "203.0.113.7", None).unwrap();
    assert!(
        g.firewall.error.is_some(),
        "the reply says the table is not updated yet"
    );
    assert_eq!(rig.store().grants.len(), 1, "the store has it");
    assert!(!rig.table().has(ip("203.0.113.7")));
    let st = rig.one(10, Command::Status).unwrap();
    assert!(st.firewall_error.is_some());
    // nft works again; the retry is due a second after the failure, not at the next interval.
    rig.table().fail = false;
    rig.wake(500);
    assert!(!rig.table().has(ip("203.0.113.7")), "not due yet");
    rig.wake(SEC);
    assert!(rig.table().has(ip("203.0.113.7")), "repaired");
    let st = rig.one(SEC + 10, Command::Status).unwrap();
    assert!(st.in_sync && st.firewall_error.is_none(), "{st:?}");
}

#[test]
fn a_failing_retry_backs_off() {
    let mut rig = Rig::new();
    rig.table().fail = true;
    rig.grant(0, "203.0.113.7", None).unwrap();
    // Retries at 1 s, 2 s, 4 s: each failure doubles the wait.
    rig.wake(SEC);
    rig.wake(2 * SEC);
    assert_eq!(rig.store().grants.len(), 1);
    rig.table().fail = false;
    rig.wake(4 * SEC - 1);
    assert!(!rig.table().has(ip("203.0.113.7")), "not due before 4 s");
    rig.wake(4 * SEC);
    assert!(rig.table().has(ip("203.0.113.7")));
}

#[test]
fn a_reconcile_puts_back_what_went_missing() {
    let mut rig = Rig::new();
    rig.grant(0, "203.0.113.7", None).unwrap();
    rig.table().elements.as_mut().unwrap().clear();
    rig.wake(30 * SEC);
    assert!(
        !rig.table().has(ip("203.0.113.7")),
        "reconciles wait for their interval"
    );
    rig.wake(60 * SEC);
    assert!(rig.table().has(ip("203.0.113.7")));
}

/// The refusal's words.
fn refused<T: std::fmt::Debug>(r: Result<T, Refused>) -> String {
    r.unwrap_err().0
}

#[test]
fn refusals_change_nothing() {
    let mut rig = Rig::new();
    rig.one(0, |r| Command::Ban(ban_ask("203.0.113.66", None), r))
        .unwrap();
    let (tx0, nft0) = (rig.store().transactions, rig.table().batches);
    let e = refused(rig.one(SEC, |r| Command::Ban(ban_ask("192.0.2.10", None), r)));
    assert!(e.contains("trusted addresses are never banned"), "{e}");
    let e = refused(rig.grant(SEC, "203.0.113.7", Some("5h")));
    assert_eq!(e, "TTL 5h is above the cap grants.ttl-max (4h)");
    let e = refused(rig.grant(SEC, "127.0.0.1", None));
    assert!(e.contains("127.0.0.1"), "{e}");
    let e = refused(rig.one(SEC, |r| {
        Command::Grant(grant_ask("203.0.113.7", &["sip", "ssh"], None), r)
    }));
    assert!(e.starts_with("unknown service `ssh`"), "{e}");
    let e = refused(rig.one(SEC, |r| Command::Revoke(ip("203.0.113.7"), r)));
    assert_eq!(e, "203.0.113.7 has no grant");
    let e = refused(rig.one(SEC, |r| Command::Ban(ban_ask("203.0.113.8", Some("0s")), r)));
    assert_eq!(e, "a TTL must be more than 0s");
    assert_eq!(rig.table().batches, nft0);
    assert!(rig.store().grants.is_empty());
    assert_eq!(rig.store().bans.len(), 1);
    // A revoke of nothing is a (harmless) delete; nothing else wrote.
    assert!(rig.store().transactions - tx0 <= 1);
}

#[test]
fn a_grant_of_a_banned_address_is_granted_with_a_warning() {
    let mut rig = Rig::new();
    rig.one(0, |r| Command::Ban(ban_ask("203.0.113.7", Some("1h")), r))
        .unwrap();
    let g = rig.grant(10 * MIN, "203.0.113.7", None).unwrap();
    assert!(g.warning.unwrap().contains("for another 50m"));
}

#[test]
fn status_and_list_read_the_store_and_the_table() {
    let mut rig = Rig::new();
    rig.grant(0, "203.0.113.7", Some("2h")).unwrap();
    rig.grant(0, "203.0.113.8", Some("1h")).unwrap();
    rig.one(0, |r| Command::Ban(ban_ask("203.0.113.66", None), r))
        .unwrap();
    let st = rig.one(SEC, Command::Status).unwrap();
    assert_eq!((st.grants, st.bans, st.elements), (2, 1, 3));
    assert!(st.table_present && st.in_sync, "{st:?}");
    assert_eq!(st.services, ["rtp", "sip"]);
    assert_eq!(st.now, W0 + SEC);
    let l = rig.one(SEC, |r| Command::List(Some(1), r)).unwrap();
    assert_eq!(l.grants.len(), 1);
    assert_eq!(l.grants[0].address, ip("203.0.113.8"), "the one ending first");
    // Drift shows in the status and is left alone by it.
    rig.table().elements.as_mut().unwrap().clear();
    let st = rig.one(2 * SEC, Command::Status).unwrap();
    assert!(!st.in_sync);
    assert_eq!(st.sync_detail, "3 element(s) to set, 0 to remove");
    assert_eq!(rig.table().elements.as_ref().unwrap().len(), 0);
}

#[test]
fn a_reload_takes_the_new_services_and_keeps_every_grant() {
    let mut rig = Rig::new();
    rig.one(0, |r| {
        Command::Grant(grant_ask("203.0.113.7", &["sip", "rtp"], None), r)
    })
    .unwrap();
    let smaller = Config::parse(
        &CONFIG.replace("[services.rtp]\nports = [\"udp/10000-20000\"]\n", ""),
        "t",
    )
    .unwrap();
    let reloaded = rig.one(SEC, |r| Command::Reload(Box::new(smaller), r)).unwrap();
    assert!(reloaded.table.is_ok(), "{reloaded:?}");
    assert_eq!(rig.store().grants.len(), 1, "grants are the store's");
    assert_eq!(
        rig.table().count(ip("203.0.113.7")),
        1,
        "rtp is gone from the table"
    );
    let e = rig
        .one(2 * SEC, |r| {
            Command::Grant(grant_ask("203.0.113.8", &["rtp"], None), r)
        })
        .unwrap_err();
    assert_eq!(e.0, "unknown service `rtp`; the config defines: sip");
}

#[test]
fn a_wall_clock_stepped_back_does_not_lengthen_a_grant_in_the_table() {
    let mut rig = Rig::new();
    rig.grant(0, "203.0.113.7", Some("1h")).unwrap();
    // Ten minutes on, the wall clock says three hours earlier.
    let stepped = Now {
        wall: W0 + 10 * MIN - 3 * HOUR,
        mono: rig.t0 + Duration::from_millis(10 * MIN as u64),
    };
    rig.engine.wake(stepped);
    let desired = rig.engine.desired_now(stepped).unwrap();
    let end = *desired.elements().values().next().unwrap();
    assert_eq!(end - stepped.wall, 50 * MIN, "50 minutes truly left, not 3 h 50");
}

#[test]
fn accounts_are_added_once_and_their_passcode_shown_once() {
    let mut rig = Rig::new();
    let ask = AccountAsk {
        name: "alice".into(),
        callers: vec!["+41 79 123 45 67".into()],
        ..AccountAsk::default()
    };
    let made = rig.one(0, |r| Command::AccountAdd(ask.clone(), r)).unwrap();
    assert_eq!(made.account.services, ["sip"], "grants.default-services");
    assert!(made.passcode.expose().chars().all(|c| c.is_ascii_digit()));
    assert_eq!(rig.store().accounts.len(), 1);
    let e = rig.one(0, |r| Command::AccountAdd(ask, r)).unwrap_err();
    assert!(e.0.contains("exists"), "{e}");
    let bad = AccountAsk {
        name: "bob".into(),
        address_modes: vec!["psychic".into()],
        ..AccountAsk::default()
    };
    let e = rig.one(0, |r| Command::AccountAdd(bad, r)).unwrap_err();
    assert!(e.0.starts_with("unknown address mode `psychic`"), "{e}");
    rig.one(0, |r| Command::AccountSetDisabled("alice".into(), true, r))
        .unwrap();
    assert!(rig.store().accounts[0].0.disabled);
    rig.one(0, |r| Command::AccountRemove("alice".into(), r)).unwrap();
    assert!(rig.store().accounts.is_empty());
}

#[test]
fn a_handle_whose_engine_is_gone_is_told_so() {
    let (handle, inbox) = super::channel(4);
    drop(inbox);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let actor = Actor::new("uid 0", Source::Admin);
    let r = rt.block_on(handle.revoke(&actor, ip("203.0.113.7")));
    assert_eq!(r, Err(Refused::new("the daemon is stopping")));
}
