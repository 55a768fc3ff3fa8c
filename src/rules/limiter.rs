//! Brute-force limits on passcode entry, with time passed in: a lockout per calling number and per
//! untrusted source address after repeated guesses, and a global cap on guesses per hour that
//! suspends passcode entry — except for an account owner's own numbers, so a flood from rotating
//! caller ids cannot keep the owner out. The state is a plain value the daemon keeps in the store
//! ([`Record`]), so a restart forgets nothing; [`odds`] states what the limits allow a guesser.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Duration;

use crate::base::clock::UnixMs;
use crate::config::DisaConfig;

const HOUR_MS: i64 = 3_600_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuessLimits {
    /// Guesses from one number (or one address) within `window` that lock it out.
    pub failures: u32,
    pub window: Duration,
    /// How long a lockout lasts.
    pub lockout: Duration,
    /// Guesses from everyone within an hour that suspend passcode entry.
    pub global_per_hour: u32,
    /// How long a suspension lasts.
    pub suspend: Duration,
}

impl Default for GuessLimits {
    fn default() -> Self {
        GuessLimits {
            failures: 5,
            window: Duration::from_secs(15 * 60),
            lockout: Duration::from_secs(3600),
            global_per_hour: 30,
            suspend: Duration::from_secs(30 * 60),
        }
    }
}

impl From<&DisaConfig> for GuessLimits {
    fn from(d: &DisaConfig) -> GuessLimits {
        GuessLimits {
            failures: d.lockout_failures,
            window: d.lockout_window.0,
            lockout: d.lockout.0,
            global_per_hour: d.global_failures_per_hour,
            suspend: d.suspend.0,
        }
    }
}

/// Most numbers and addresses tracked; past it the least recent go first, so a flood of fresh
/// numbers costs bounded memory (and the global cap still holds them back).
const MAX_TRACKED: usize = 50_000;

/// Who is calling, as the limits see it.
#[derive(Clone, Copy, Debug)]
pub struct Caller<'a> {
    /// The calling number as Asterisk has it (forgeable: one key among several).
    pub number: &'a str,
    /// The SIP source, only when it is *not* trusted: a trunk carries every PSTN caller, so
    /// locking its address out would lock everyone out.
    pub address: Option<IpAddr>,
    /// The number is one an account lists as its owner's: still let through while entry is
    /// suspended for everyone else (its own lockout still holds).
    pub owner: bool,
}

/// A calling number as the limits key it: digits only, so `+1 (555) 010-0100` and
/// `15550100100` are one number. `None` for a number with no digits (anonymous, withheld), which
/// all such callers then share; junk that is not a phone number is refused.
pub fn normalize_number(raw: &str) -> Result<Option<String>, String> {
    let raw = raw.trim();
    if raw.chars().any(|c| !(c.is_ascii_digit() || " +-().".contains(c))) {
        return Err(format!(
            "`{raw}` is not a phone number (digits, with + - ( ) . and spaces)"
        ));
    }
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    match digits.len() {
        0 => Ok(None),
        1..=32 => Ok(Some(digits)),
        _ => Err(format!("`{raw}` is longer than a phone number")),
    }
}

/// What the gate says before a passcode is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Check the passcode.
    Open,
    /// Entry is suspended for everyone, but this is an owner's number: check the passcode, and
    /// accept it only for an account that lists this number.
    OwnerOnly,
    /// The number or the address is locked out.
    LockedOut,
    /// Entry is suspended for everyone.
    Suspended,
}

impl Admission {
    pub fn checks(self) -> bool {
        matches!(self, Admission::Open | Admission::OwnerOnly)
    }
}

/// One key of the limits' state, as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Number(String),
    Address(IpAddr),
    /// Everyone's guesses in the last hour, and the suspension.
    Global,
}

impl Key {
    /// (kind, key) for the store.
    pub fn parts(&self) -> (&'static str, String) {
        match self {
            Key::Number(n) => ("number", n.clone()),
            Key::Address(a) => ("address", a.to_string()),
            Key::Global => ("global", String::new()),
        }
    }

    pub fn from_parts(kind: &str, key: &str) -> Option<Key> {
        match kind {
            "number" => Some(Key::Number(key.to_string())),
            "address" => key.parse().ok().map(Key::Address),
            "global" => Some(Key::Global),
            _ => None,
        }
    }
}

/// One key's state: its recent guesses and how long it is locked (or, for [`Key::Global`],
/// suspended). An empty record means the key can be forgotten.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub failures: Vec<UnixMs>,
    pub locked_until: UnixMs,
}

impl Record {
    pub fn is_empty(&self, now: UnixMs) -> bool {
        self.failures.is_empty() && self.locked_until <= now
    }
}

#[derive(Debug, Default)]
struct Entry {
    failures: VecDeque<UnixMs>,
    locked_until: UnixMs,
    last: UnixMs,
}

impl Entry {
    fn record(&self) -> Record {
        Record {
            failures: self.failures.iter().copied().collect(),
            locked_until: self.locked_until,
        }
    }
}

#[derive(Debug)]
struct Table<K> {
    map: HashMap<K, Entry>,
}

impl<K: Eq + Hash + Clone> Table<K> {
    fn new() -> Self {
        Table { map: HashMap::new() }
    }

    fn locked(&self, k: &K, now: UnixMs) -> bool {
        self.map.get(k).is_some_and(|e| e.locked_until > now)
    }

    /// Records a guess; true when this one locks the key out.
    fn fail(&mut self, k: &K, p: &GuessLimits, now: UnixMs) -> bool {
        if self.map.len() >= MAX_TRACKED && !self.map.contains_key(k) {
            self.evict(now);
        }
        let e = self.map.entry(k.clone()).or_default();
        e.last = now;
        let window = p.window.as_millis() as i64;
        while e.failures.front().is_some_and(|t| *t <= now - window) {
            e.failures.pop_front();
        }
        e.failures.push_back(now);
        if e.failures.len() as u32 >= p.failures && e.locked_until <= now {
            e.locked_until = now + p.lockout.as_millis() as i64;
            e.failures.clear();
            return true;
        }
        false
    }

    fn record(&self, k: &K) -> Record {
        self.map.get(k).map(Entry::record).unwrap_or_default()
    }

    fn restore(&mut self, k: K, r: Record, now: UnixMs) {
        let last = r.failures.iter().copied().max().unwrap_or(now);
        self.map.insert(
            k,
            Entry {
                failures: r.failures.into(),
                locked_until: r.locked_until,
                last,
            },
        );
    }

    /// Forgets `k`; whether there was anything to forget.
    fn clear(&mut self, k: &K) -> bool {
        self.map.remove(k).is_some()
    }

    fn evict(&mut self, now: UnixMs) {
        self.map.retain(|_, e| e.locked_until > now);
        if self.map.len() >= MAX_TRACKED {
            // Still full of lockouts: drop the oldest half of them.
            let mut lasts: Vec<UnixMs> = self.map.values().map(|e| e.last).collect();
            lasts.sort_unstable();
            let cut = lasts[lasts.len() / 2];
            self.map.retain(|_, e| e.last > cut);
        }
    }
}

/// What a guess led to, for the audit log and for bans.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Failure {
    pub number_locked: bool,
    pub address_locked: bool,
    pub suspended: bool,
}

pub struct Limiter {
    policy: GuessLimits,
    numbers: Table<String>,
    addrs: Table<IpAddr>,
    global: VecDeque<UnixMs>,
    suspended_until: UnixMs,
}

impl Limiter {
    pub fn new(policy: GuessLimits) -> Limiter {
        Limiter {
            policy,
            numbers: Table::new(),
            addrs: Table::new(),
            global: VecDeque::new(),
            suspended_until: 0,
        }
    }

    /// A limiter that carries on from `records` (as the store kept them).
    pub fn restore(
        policy: GuessLimits,
        records: impl IntoIterator<Item = (Key, Record)>,
        now: UnixMs,
    ) -> Limiter {
        let mut l = Limiter::new(policy);
        for (k, r) in records {
            match k {
                Key::Number(n) => l.numbers.restore(n, r, now),
                Key::Address(a) => l.addrs.restore(a, r, now),
                Key::Global => {
                    let mut f = r.failures;
                    f.sort_unstable();
                    l.global = f.into();
                    l.suspended_until = r.locked_until;
                }
            }
        }
        l
    }

    /// Takes `keys`' state from `records`, the store's as it is now: with a store several nodes
    /// share, what their calls did to these keys counts here too. A key `records` leaves out has
    /// nothing on record anywhere (a right passcode at another node cleared it).
    pub fn refresh(&mut self, keys: &[Key], records: Vec<(Key, Record)>, now: UnixMs) {
        let mut records: HashMap<Key, Record> = records.into_iter().collect();
        for k in keys {
            let r = records.remove(k);
            match k {
                Key::Number(n) => match r {
                    Some(r) => self.numbers.restore(n.clone(), r, now),
                    None => {
                        self.numbers.clear(n);
                    }
                },
                Key::Address(a) => match r {
                    Some(r) => self.addrs.restore(*a, r, now),
                    None => {
                        self.addrs.clear(a);
                    }
                },
                Key::Global => {
                    let r = r.unwrap_or_default();
                    let mut f = r.failures;
                    f.sort_unstable();
                    self.global = f.into();
                    self.suspended_until = r.locked_until;
                }
            }
        }
    }

    /// The state of `key`, to be written to the store after it changed.
    pub fn record(&self, key: &Key) -> Record {
        match key {
            Key::Number(n) => self.numbers.record(n),
            Key::Address(a) => self.addrs.record(a),
            Key::Global => Record {
                failures: self.global.iter().copied().collect(),
                locked_until: self.suspended_until,
            },
        }
    }

    /// The keys a guess or a success by `caller` touches.
    pub fn keys(caller: &Caller<'_>) -> Vec<Key> {
        let mut keys = vec![Key::Number(caller.number.to_string()), Key::Global];
        keys.extend(caller.address.map(Key::Address));
        keys
    }

    /// Whether this caller's passcode is checked now. A refused caller is still prompted and
    /// hears "incorrect": only this gate knows.
    pub fn gate(&self, caller: &Caller<'_>, now: UnixMs) -> Admission {
        if self.numbers.locked(&caller.number.to_string(), now)
            || caller.address.is_some_and(|a| self.addrs.locked(&a, now))
        {
            return Admission::LockedOut;
        }
        if self.suspended(now) || self.recent_global(now) as u32 >= self.policy.global_per_hour {
            return if caller.owner {
                Admission::OwnerOnly
            } else {
                Admission::Suspended
            };
        }
        Admission::Open
    }

    fn recent_global(&self, now: UnixMs) -> usize {
        self.global
            .iter()
            .rev()
            .take_while(|t| **t > now - HOUR_MS)
            .count()
    }

    pub fn suspended(&self, now: UnixMs) -> bool {
        self.suspended_until > now
    }

    /// Records a wrong passcode: an entry that could have been one (the caller decides that).
    pub fn failure(&mut self, caller: &Caller<'_>, now: UnixMs) -> Failure {
        let mut out = Failure {
            number_locked: self.numbers.fail(&caller.number.to_string(), &self.policy, now),
            ..Failure::default()
        };
        if let Some(a) = caller.address {
            out.address_locked = self.addrs.fail(&a, &self.policy, now);
        }
        while self.global.front().is_some_and(|t| *t <= now - HOUR_MS) {
            self.global.pop_front();
        }
        // Bounded: past the cap only owners' numbers get through, and each of those locks out
        // after a handful.
        if self.global.len() < 4 * self.policy.global_per_hour.max(1) as usize {
            self.global.push_back(now);
        }
        if self.global.len() as u32 >= self.policy.global_per_hour && self.suspended_until <= now {
            // The hour's guesses stay counted: the cap holds over any rolling hour, and the
            // suspension adds a pause on top.
            self.suspended_until = now + self.policy.suspend.as_millis() as i64;
            out.suspended = true;
        }
        out
    }

    /// A right passcode clears that caller's count.
    /// Forgets the caller's failures; whether it had any (else there is nothing to store).
    pub fn success(&mut self, caller: &Caller<'_>) -> bool {
        let number = self.numbers.clear(&caller.number.to_string());
        let address = caller.address.is_some_and(|a| self.addrs.clear(&a));
        number || address
    }

    pub fn tracked(&self) -> usize {
        self.numbers.map.len() + self.addrs.map.len()
    }
}

/// What the limits allow a guesser, at the highest rate they let through.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Odds {
    /// Passcode checks a year through the global cap, each against every account.
    pub open_guesses: f64,
    /// Passcode checks a year through owners' numbers while entry is suspended, each against
    /// only the accounts that list that number.
    pub owner_guesses: f64,
    /// The chance that any guess succeeds within a year.
    pub p_year: f64,
}

/// Hours in an average year.
const YEAR_HOURS: f64 = 8766.0;

impl Odds {
    /// The odds in words, for `doctor` and the README.
    pub fn describe(&self, p: &GuessLimits, accounts: u64, owner_pairs: u64, digits: u32) -> String {
        format!(
            "{accounts} account(s) with {digits}-digit passcodes, {owner_pairs} owner number(s): at most \
             {} wrong passcodes an hour reach a check ({} a year), plus {} a year through owners' \
             numbers while entry is suspended; P(any guess succeeds within a year) <= {:.1e}",
            p.global_per_hour, self.open_guesses as u64, self.owner_guesses as u64, self.p_year
        )
    }
}

/// The odds a guesser has in a year, with `accounts` accounts whose shortest passcode has
/// `digits` digits, and `owner_pairs` (account, owner number) pairs.
///
/// Every guess that reaches a check counts towards the global cap, so at most
/// `global_per_hour` checks an hour get through the open gate, each against all accounts.
/// While suspended, only owners' numbers get through; one number yields at most `failures`
/// guesses per `min(window, lockout)` before it is locked out (a guesser who keeps under the
/// lockout gets at most `failures - 1` per window), each against only the accounts listing it.
pub fn odds(p: &GuessLimits, accounts: u64, owner_pairs: u64, digits: u32) -> Odds {
    let space = 10f64.powi(digits as i32);
    let open_guesses = p.global_per_hour as f64 * YEAR_HOURS;
    let period_h = p.window.min(p.lockout).as_secs_f64().max(1.0) / 3600.0;
    let per_number = p.failures as f64 / period_h * YEAR_HOURS;
    let owner_guesses = per_number * owner_pairs as f64;
    let expected = (open_guesses * accounts as f64 + owner_guesses) / space;
    Odds {
        open_guesses,
        owner_guesses,
        p_year: expected.min(1.0),
    }
}

#[cfg(test)]
mod tests;
