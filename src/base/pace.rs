//! Background work that gives the CPU away. A thread that turns pacing on ([`on`]) sleeps for a
//! moment after each short burst of work, at the points its loops mark with [`breathe`]; on any
//! other thread `breathe` does nothing. A thread woken on a core that busy work holds can wait for
//! the scheduler's tick (4 ms here) to get it, even when the busy thread runs at nice 19; a thread
//! that sleeps every half millisecond holds no one up for longer than that.
//!
//! Urgent work (the engine's: a request in hand, or queued for it) is announced with [`urgent`].
//! While it is, a paced thread steps aside: it sleeps rather than work, up to [`ASIDE_MAX`] before
//! each burst, so the cores are free whenever the urgent thread is woken (a disk flush done, a
//! lock given back), and the scheduler never queues it behind paced work while a core stands idle.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a paced thread works before it rests.
pub const BURST: Duration = Duration::from_micros(500);
/// How long it rests: any sleep lets the threads woken meanwhile run. (The thread's timer slack
/// is cut to 1 µs, so the sleep is about this long, not 50 µs more.)
pub const REST: Duration = Duration::from_micros(20);

/// How long a paced thread sleeps at a time while urgent work is in hand.
pub const ASIDE: Duration = Duration::from_micros(50);
/// How long it may step aside before each burst: under urgent work that never stops, it still
/// works a burst in every 5.5 ms (a read-back of 200 ms then takes about 2 s, not forever).
pub const ASIDE_MAX: Duration = Duration::from_millis(5);

/// Set while urgent work is in hand or queued.
static URGENT: AtomicBool = AtomicBool::new(false);

/// Says whether urgent work is in hand or queued: paced threads step aside while it is.
pub fn urgent(now: bool) {
    URGENT.store(now, Ordering::Relaxed);
}

/// When a burst of work began, how long it may go on, and how long the thread has stepped aside
/// since its last whole burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacer {
    burst: Duration,
    since: Instant,
    aside: Duration,
}

impl Pacer {
    pub fn new(burst: Duration, now: Instant) -> Pacer {
        Pacer {
            burst,
            since: now,
            aside: Duration::ZERO,
        }
    }

    /// Whether the burst begun at the last rest is over at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now.duration_since(self.since) >= self.burst
    }

    /// A rest taken after a whole burst: the next burst begins at `now`, and the thread may step
    /// aside again.
    pub fn rested(&mut self, now: Instant) {
        self.since = now;
        self.aside = Duration::ZERO;
    }

    /// Whether it may step aside for urgent work now, or must work on first.
    pub fn may_step_aside(&self) -> bool {
        self.aside < ASIDE_MAX
    }

    /// Stepped aside for `slept`, until `now`: the burst begins again from `now`.
    pub fn stepped_aside(&mut self, slept: Duration, now: Instant) {
        self.aside += slept;
        self.since = now;
    }
}

thread_local! {
    static PACER: Cell<Option<Pacer>> = const { Cell::new(None) };
}

/// Paces this thread from now on: [`BURST`] of work, then [`REST`].
pub fn on() {
    // SAFETY: PR_SET_TIMERSLACK sets this thread's own slack; no memory is passed.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
    PACER.set(Some(Pacer::new(BURST, Instant::now())));
}

/// Rests if this thread is paced and its burst is over; at once otherwise. A look at the clock
/// costs about 25 ns; a call marks a row, an element or a 32 KiB piece of a listing.
pub fn breathe() {
    let Some(mut pacer) = PACER.get() else {
        return;
    };
    let mut now = Instant::now();
    let mut changed = false;
    while URGENT.load(Ordering::Relaxed) && pacer.may_step_aside() {
        std::thread::sleep(ASIDE);
        let woke = Instant::now();
        pacer.stepped_aside(woke.duration_since(now), woke);
        now = woke;
        changed = true;
    }
    if pacer.due(now) {
        std::thread::sleep(REST);
        pacer.rested(Instant::now());
        changed = true;
    }
    if changed {
        PACER.set(Some(pacer));
    }
}

/// Drops `items` one at a time, breathing between: freeing a map of 200,000 keys that each own a
/// string takes milliseconds.
pub fn drop_paced<I: IntoIterator>(items: I) {
    for item in items {
        drop(item);
        breathe();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_over_once_its_length_has_passed_since_the_last_rest() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Duration::from_micros(500), t0);
        assert!(!p.due(t0));
        assert!(!p.due(t0 + Duration::from_micros(499)));
        assert!(p.due(t0 + Duration::from_micros(500)));
        p.rested(t0 + Duration::from_millis(1));
        assert!(!p.due(t0 + Duration::from_micros(1400)));
        assert!(p.due(t0 + Duration::from_micros(1500)));
    }

    #[test]
    fn a_thread_steps_aside_for_urgent_work_up_to_its_limit_then_works_a_whole_burst() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Duration::from_micros(500), t0);
        let mut t = t0;
        let mut stepped = 0;
        while p.may_step_aside() {
            t += ASIDE;
            p.stepped_aside(ASIDE, t);
            stepped += 1;
        }
        assert_eq!(stepped, ASIDE_MAX.as_micros() / ASIDE.as_micros());
        assert!(!p.due(t), "the burst begins when it stops stepping aside");
        assert!(p.due(t + Duration::from_micros(500)));
        p.rested(t + Duration::from_micros(520));
        assert!(p.may_step_aside(), "after a whole burst it may step aside again");
    }

    #[test]
    fn breathing_never_waits_on_a_thread_that_is_not_paced() {
        std::thread::spawn(|| {
            for _ in 0..10_000 {
                breathe();
            }
            assert_eq!(PACER.get(), None);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_paced_drop_drops_every_item() {
        let item = std::rc::Rc::new(());
        let items = vec![item.clone(); 1000];
        assert_eq!(std::rc::Rc::strong_count(&item), 1001);
        drop_paced(items);
        assert_eq!(std::rc::Rc::strong_count(&item), 1);
    }

    #[test]
    fn a_paced_thread_rests_when_its_burst_is_over_and_begins_another() {
        std::thread::spawn(|| {
            on();
            assert_eq!(PACER.get().unwrap().burst, BURST);
            // A burst that is over at once: the next call rests.
            let begun = Instant::now();
            PACER.set(Some(Pacer::new(Duration::ZERO, begun)));
            breathe();
            let after = PACER.get().unwrap();
            assert!(after.since >= begun + REST, "rested, then began a new burst");
            // A burst of an hour: no rest.
            PACER.set(Some(Pacer::new(Duration::from_secs(3600), begun)));
            breathe();
            assert_eq!(PACER.get().unwrap().since, begun);
        })
        .join()
        .unwrap();
    }
}
