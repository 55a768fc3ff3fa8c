//! The control socket's connection slots: a cap on connections open at once where a newcomer takes
//! the slot of the connection idle the longest, so a pile of idle connections neither grows
//! without bound nor locks the admin's CLI out.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// Every open control connection holds one [`Slot`].
pub struct Slots {
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Slots held, not counting connections already told to close.
    open: usize,
    /// Orders idleness: a connection going idle gets the next number.
    next: u64,
    /// Connections waiting for their next request, oldest first: these may be closed for room.
    idle: BTreeMap<u64, CancellationToken>,
}

impl Slots {
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            inner: Mutex::default(),
        })
    }

    /// A slot for a new connection: a free one, or else the one of the connection idle the
    /// longest, which is told to close. `None` when every connection is busy with a request.
    pub fn take(self: &Arc<Self>) -> Option<Slot> {
        let mut inner = self.lock();
        if inner.open >= self.max {
            let (_, oldest) = inner.idle.pop_first()?;
            // Its slot passes to the newcomer: the evicted one gives nothing back on drop.
            oldest.cancel();
            inner.open -= 1;
        }
        inner.open += 1;
        Some(Slot {
            slots: self.clone(),
            evict: CancellationToken::new(),
            idle: None,
        })
    }

    /// Connections holding a slot.
    pub fn open(&self) -> usize {
        self.lock().open
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::base::lock::lock(&self.inner)
    }
}

/// One connection's place; given back on drop.
pub struct Slot {
    slots: Arc<Slots>,
    evict: CancellationToken,
    idle: Option<u64>,
}

impl Slot {
    /// The connection waits for a request: from now on it may be closed to make room.
    pub fn idle(&mut self) {
        let mut inner = self.slots.lock();
        if self.evict.is_cancelled() {
            // Already given away: it must not make room a second time.
            return;
        }
        if let Some(key) = self.idle.take() {
            inner.idle.remove(&key);
        }
        let key = inner.next;
        inner.next += 1;
        inner.idle.insert(key, self.evict.clone());
        self.idle = Some(key);
    }

    /// The connection has a request in hand: it is not closed for room until it is idle again.
    pub fn busy(&mut self) {
        if let Some(key) = self.idle.take() {
            self.slots.lock().idle.remove(&key);
        }
    }

    /// Completes once the slot was given to a newer connection; the connection should then close.
    pub fn evicted(&self) -> WaitForCancellationFuture<'_> {
        self.evict.cancelled()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.slots.lock();
        if let Some(key) = self.idle.take() {
            inner.idle.remove(&key);
        }
        // Checked under the lock: `take` cancels and recounts under it too.
        if !self.evict.is_cancelled() {
            inner.open -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newcomer_past_the_cap_takes_the_longest_idle_slot() {
        let slots = Slots::new(2);
        let mut a = slots.take().unwrap();
        let mut b = slots.take().unwrap();
        b.idle();
        a.idle();
        // b went idle first: it makes room.
        let c = slots.take().unwrap();
        assert!(b.evict.is_cancelled() && !a.evict.is_cancelled());
        assert_eq!(slots.open(), 2);
        drop(b);
        assert_eq!(slots.open(), 2, "the evicted slot is not given back twice");
        drop(c);
        assert_eq!(slots.open(), 1);
        drop(a);
        assert_eq!(slots.open(), 0);
        assert!(slots.lock().idle.is_empty());
    }

    #[test]
    fn busy_connections_are_never_evicted_and_the_newcomer_is_refused() {
        let slots = Slots::new(2);
        let mut a = slots.take().unwrap();
        let _b = slots.take().unwrap();
        a.idle();
        a.busy();
        assert!(slots.take().is_none(), "every connection has a request in hand");
        a.idle();
        let _c = slots.take().unwrap();
        assert!(a.evict.is_cancelled());
        // Served one last request it had already sent, it goes idle again: no second eviction.
        a.idle();
        assert!(slots.take().is_none());
    }

    #[test]
    fn going_idle_again_moves_to_the_back_of_the_line() {
        let slots = Slots::new(2);
        let mut a = slots.take().unwrap();
        let mut b = slots.take().unwrap();
        a.idle();
        b.idle();
        a.busy();
        a.idle();
        let _c = slots.take().unwrap();
        assert!(b.evict.is_cancelled() && !a.evict.is_cancelled());
    }
}
