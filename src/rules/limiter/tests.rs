//! The guessing limits' unit tests.

use super::*;

const MIN: i64 = 60_000;

fn caller(number: &str, address: Option<IpAddr>) -> Caller<'_> {
    Caller {
        number,
        address,
        owner: false,
    }
}

#[test]
fn number_and_address_lock_out_after_repeated_failures() {
    let mut l = Limiter::new(GuessLimits::default());
    let a: IpAddr = "203.0.113.9".parse().unwrap();
    for i in 0..4 {
        assert_eq!(l.gate(&caller("5551234", Some(a)), i * MIN), Admission::Open);
        assert_eq!(
            l.failure(&caller("5551234", Some(a)), i * MIN),
            Failure::default()
        );
    }
    let f = l.failure(&caller("5551234", Some(a)), 4 * MIN);
    assert!(f.number_locked && f.address_locked);
    assert_eq!(l.gate(&caller("5551234", None), 5 * MIN), Admission::LockedOut);
    assert_eq!(
        l.gate(&caller("5550000", Some(a)), 5 * MIN),
        Admission::LockedOut,
        "the address is locked whatever the number"
    );
    assert_eq!(
        l.gate(&caller("5550000", None), 5 * MIN),
        Admission::Open,
        "another number from elsewhere is not"
    );
    assert_eq!(
        l.gate(&caller("5551234", Some(a)), 4 * MIN + 3_600_001),
        Admission::Open,
        "a lockout ends"
    );
}

#[test]
fn a_trunk_passed_as_no_address_locks_out_only_the_number() {
    let mut l = Limiter::new(GuessLimits::default());
    for i in 0..5 {
        l.failure(&caller("111", None), i);
    }
    assert_eq!(l.gate(&caller("111", None), 10), Admission::LockedOut);
    assert_eq!(l.gate(&caller("222", None), 10), Admission::Open);
}

#[test]
fn failures_outside_the_window_do_not_add_up() {
    let mut l = Limiter::new(GuessLimits::default());
    for i in 0..20 {
        // One failure every 4 minutes: never 5 within 15 minutes.
        assert!(!l.failure(&caller("555", None), i * 4 * MIN).number_locked);
    }
    assert_eq!(l.gate(&caller("555", None), 80 * MIN), Admission::Open);
}

#[test]
fn success_clears_the_count() {
    let mut l = Limiter::new(GuessLimits::default());
    for i in 0..4 {
        l.failure(&caller("555", None), i);
    }
    l.success(&caller("555", None));
    assert!(!l.failure(&caller("555", None), 5).number_locked);
}

#[test]
fn owners_numbers_pass_a_suspension_but_not_their_own_lockout() {
    let p = GuessLimits {
        global_per_hour: 3,
        ..GuessLimits::default()
    };
    let mut l = Limiter::new(p);
    for n in ["9001", "9002", "9003"] {
        l.failure(&caller(n, None), MIN);
    }
    assert!(l.suspended(MIN));
    assert_eq!(l.gate(&caller("9004", None), 2 * MIN), Admission::Suspended);
    let owner = Caller {
        number: "5550100",
        address: None,
        owner: true,
    };
    assert_eq!(l.gate(&owner, 2 * MIN), Admission::OwnerOnly);
    for i in 0..5 {
        l.failure(&owner, 2 * MIN + i);
    }
    assert_eq!(l.gate(&owner, 3 * MIN), Admission::LockedOut);
    // The cap holds over the rolling hour even once the suspension's 30 minutes are over.
    assert_eq!(l.gate(&caller("9004", None), 40 * MIN), Admission::Suspended);
    assert_eq!(l.gate(&caller("9004", None), 63 * MIN), Admission::Open);
}

#[test]
fn the_state_round_trips_through_records() {
    let p = GuessLimits {
        global_per_hour: 3,
        ..GuessLimits::default()
    };
    let mut l = Limiter::new(p);
    let a: IpAddr = "203.0.113.9".parse().unwrap();
    for i in 0..5 {
        l.failure(&caller("111", Some(a)), i);
    }
    let keys = [Key::Number("111".into()), Key::Address(a), Key::Global];
    let records: Vec<(Key, Record)> = keys.iter().map(|k| (k.clone(), l.record(k))).collect();
    for (k, _) in &records {
        let (kind, key) = k.parts();
        assert_eq!(Key::from_parts(kind, &key).as_ref(), Some(k));
    }
    let back = Limiter::restore(p, records, 10);
    assert_eq!(back.gate(&caller("111", None), 10), Admission::LockedOut);
    assert_eq!(back.gate(&caller("222", Some(a)), 10), Admission::LockedOut);
    assert!(back.suspended(10));
    for k in &keys {
        assert_eq!(back.record(k), l.record(k));
    }
}

/// Many numbers and addresses, a whole week, as fast as an attacker can dial: how many
/// passcode checks get through the gate, and what chance do they have?
#[test]
fn guessing_from_many_numbers_is_hopeless() {
    let p = GuessLimits::default();
    let mut l = Limiter::new(p);
    let (mut checked, mut attempts) = (0u64, 0u64);
    let week = 7 * 24 * 60 * MIN;
    let mut now = 0;
    let mut n: u64 = 0;
    // An attempt every 100 ms, each from a fresh number and a fresh address.
    while now < week {
        n += 1;
        let number = format!("+1555{n:07}");
        let addr = IpAddr::from([100, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
        let c = caller(&number, Some(addr));
        attempts += 1;
        if l.gate(&c, now).checks() {
            checked += 1;
            l.failure(&c, now);
        }
        now += 100;
    }
    // At most the global cap per hour, minus suspensions.
    let hours = (week / (60 * MIN)) as u64;
    assert!(
        checked <= p.global_per_hour as u64 * hours,
        "{checked} checks in {hours} h"
    );
    // 100 accounts with 12-digit passcodes: the chance any check hits one.
    let p_hit = checked as f64 * 100.0 / 1e12;
    assert!(p_hit < 1e-6, "P(guess in a week) = {p_hit:e}");
    assert!(
        l.tracked() <= 2 * MAX_TRACKED,
        "memory stays bounded: {}",
        l.tracked()
    );
    let odds = odds(&p, 100, 0, 12);
    assert!(
        checked as f64 <= odds.open_guesses * 7.0 * 24.0 / YEAR_HOURS,
        "the stated bound holds: {checked} in a week against {} a year",
        odds.open_guesses
    );
    eprintln!("{attempts} attempts in a week, {checked} reached a passcode check; P(hit) = {p_hit:.1e}");
}

/// The same flood, with an owner's number forged among the rotating ones: the escape hatch
/// adds at most what [`odds`] says.
#[test]
fn a_forged_owner_number_gets_no_more_than_the_stated_bound() {
    let p = GuessLimits::default();
    let mut l = Limiter::new(p);
    let days = 2;
    let span = days * 24 * 60 * MIN;
    let (mut now, mut owner_checks, mut n) = (0, 0u64, 0u64);
    while now < span {
        n += 1;
        let number = if n % 2 == 0 {
            "5550100".to_string()
        } else {
            format!("+1555{n:07}")
        };
        let c = Caller {
            number: &number,
            address: None,
            owner: n % 2 == 0,
        };
        match l.gate(&c, now) {
            Admission::OwnerOnly => {
                owner_checks += 1;
                l.failure(&c, now);
            }
            Admission::Open => {
                l.failure(&c, now);
            }
            _ => {}
        }
        now += 100;
    }
    let bound = odds(&p, 1, 1, 12).owner_guesses * (days * 24) as f64 / YEAR_HOURS;
    assert!(
        owner_checks > 0 && owner_checks as f64 <= bound,
        "{owner_checks} owner checks in {days} days; bound {bound}"
    );
}

#[test]
fn numbers_are_keyed_by_their_digits() {
    assert_eq!(
        normalize_number("+1 (555) 010-0100"),
        Ok(Some("15550100100".into()))
    );
    assert_eq!(normalize_number(""), Ok(None));
    assert!(normalize_number("anonymous").is_err());
    assert!(normalize_number(&"1".repeat(33)).is_err());
}

#[test]
fn odds_with_the_defaults_are_hopeless() {
    let o = odds(&GuessLimits::default(), 100, 100, 12);
    assert_eq!(o.open_guesses, 30.0 * YEAR_HOURS);
    assert!(o.p_year < 1e-4, "{o:?}");
    assert!(o.p_year > 1e-6, "{o:?}");
}

#[test]
fn a_refresh_takes_what_other_nodes_did_to_the_callers_keys() {
    let p = GuessLimits::default();
    let a: IpAddr = "203.0.113.9".parse().unwrap();
    let me = caller("5551234", Some(a));
    let (mut here, mut there) = (Limiter::new(p), Limiter::new(p));
    // Three wrong passcodes here, one there: each node alone is under the limit of 5.
    for i in 0..3 {
        here.failure(&me, i * MIN);
    }
    there.failure(&me, 3 * MIN);
    let keys = Limiter::keys(&me);
    // `there` takes what the store holds (written by `here`), then fails once more: four.
    let stored: Vec<(Key, Record)> = keys.iter().map(|k| (k.clone(), here.record(k))).collect();
    there.refresh(&keys, stored, 4 * MIN);
    assert_eq!(there.record(&Key::Number("5551234".into())).failures.len(), 3);
    there.failure(&me, 4 * MIN);
    // And `here`, refreshed from that, locks the caller out at the fifth.
    let stored: Vec<(Key, Record)> = keys.iter().map(|k| (k.clone(), there.record(k))).collect();
    here.refresh(&keys, stored, 5 * MIN);
    assert_eq!(here.record(&Key::Global).failures.len(), 4);
    let f = here.failure(&me, 5 * MIN);
    assert!(f.number_locked && f.address_locked);
    // The lockout reaches the other node with the next refresh.
    let stored: Vec<(Key, Record)> = keys.iter().map(|k| (k.clone(), here.record(k))).collect();
    there.refresh(&keys, stored, 6 * MIN);
    assert_eq!(there.gate(&me, 6 * MIN), Admission::LockedOut);
    // A key the store no longer holds (a right passcode elsewhere cleared it) is cleared here;
    // keys not asked about stay as they were.
    let other = caller("5550000", None);
    there.failure(&other, 6 * MIN);
    there.refresh(&[Key::Number("5551234".into())], vec![], 7 * MIN);
    assert_eq!(there.record(&Key::Number("5551234".into())), Record::default());
    assert_eq!(there.record(&Key::Number("5550000".into())).failures.len(), 1);
    assert_eq!(
        there.gate(&me, 7 * MIN),
        Admission::LockedOut,
        "the address is still locked"
    );
}
