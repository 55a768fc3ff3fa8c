//! A million spoofed sources against the attempt memory: the caps hold, and the heap it uses is
//! measured by a counting allocator (its own test binary, so no other test's allocations count).

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::IpAddr;
use std::sync::atomic::{AtomicIsize, Ordering};

use knockd::attempts::{AttemptCaps, AttemptMemory};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
/// The most `LIVE` has been: a table growing holds its old and new storage for a moment.
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(by: isize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const FLOOD: u32 = 1_000_000;

fn source(i: u32) -> IpAddr {
    IpAddr::from((0x6440_0000u32 + i).to_be_bytes())
}

fn numbered(prefix: &str, n: u32, out: &mut String) {
    use std::fmt::Write;
    write!(out, "{prefix}{n:07}").unwrap();
}

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

#[test]
fn a_million_spoofed_sources_stay_bounded() {
    let limits = AttemptCaps::default();
    let (users, per_user) = (limits.users, limits.sources_per_user);
    let fill = (users * per_user) as u32;
    let now = FLOOD as i64 / 10;
    let mut name = String::with_capacity(64);

    // A million attempts, each from a new address, ten thousand a second, all in one window.
    // The first half claims every user from more addresses than it keeps (the most memory
    // the caps allow); the rest claim a new user each (churning every user out).
    let before = live();
    PEAK.store(before, Ordering::Relaxed);
    let mut m = AttemptMemory::new(limits);
    let mut full = 0;
    for i in 0..FLOOD {
        name.clear();
        if i < fill {
            numbered("u", i % users as u32, &mut name);
        } else {
            numbered("r", i, &mut name);
        }
        m.record(i as i64 / 10, source(i), &name, Some("friendly-scanner"));
        assert!(m.len() <= users);
        assert!(m.sources() <= users * per_user);
        if i == fill - 1 {
            assert_eq!((m.len(), m.sources()), (users, users * per_user));
            let a = m.lookup(now, "u0000007");
            assert_eq!((a.len(), a.sole_source()), (per_user, None));
            full = live() - before;
        }
    }
    assert_eq!((m.len(), m.sources()), (users, users));
    assert_eq!(m.lookup(now, "r0999999").len(), 1);
    assert!(m.lookup(now, "u0000007").is_empty(), "churned out");
    assert!(!m.lookup(now, "r0999999").complete, "users were forgotten");
    let one_each = live() - before;
    let peak = PEAK.load(Ordering::Relaxed) - before;
    drop(m);
    assert_eq!(live(), before, "all of it was the memory's");

    // Every attempt claims the one user the caller is after: its addresses are capped, and the
    // answer is ambiguous, never a guess.
    let before = live();
    let mut m = AttemptMemory::new(limits);
    for i in 0..FLOOD {
        m.record(i as i64 / 10, source(i), "alice", Some("friendly-scanner"));
    }
    assert_eq!((m.len(), m.sources()), (1, per_user));
    let a = m.lookup(now, "alice");
    assert_eq!((a.len(), a.sole_source()), (per_user, None));
    let one_user = live() - before;
    drop(m);

    eprintln!(
        "attempt memory under {FLOOD} spoofed sources: {users} users x {per_user} addresses = \
         {} KiB ({} B/user); {users} users x 1 address = {} KiB ({} B/user); \
         1 user x {per_user} addresses = {} B; peak {} KiB",
        full / 1024,
        full / users as isize,
        one_each / 1024,
        one_each / users as isize,
        one_user,
        peak / 1024,
    );
    // The bound this module promises, with room for allocator rounding: 1 KiB a user when full.
    assert!(full <= (users * 1024) as isize, "{full} bytes");
    assert!(peak <= (users * 1024) as isize, "{peak} bytes at the peak");
    assert!(one_user < 4096, "{one_user} bytes");
}
