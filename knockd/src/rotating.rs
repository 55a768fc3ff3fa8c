//! Rotating sequences: the ports for time step `n` are drawn from the profile's range by
//! HMAC-SHA256(secret, label ‖ n ‖ block). Whoever sniffs one sequence learns nothing about the
//! next; the gate accepts the current and the previous step, each once.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{KnockSecret, Port, PortRange};

const LABEL: &[u8] = b"passknock rotating v1";

/// The time step `unix_ms` falls in.
pub fn step_at(unix_ms: i64, step: Duration) -> u64 {
    (unix_ms.max(0) as u64) / (step.as_millis() as u64).max(1)
}

/// When step `n` begins, in Unix ms.
pub fn step_start(n: u64, step: Duration) -> i64 {
    (n.saturating_mul(step.as_millis() as u64)).min(i64::MAX as u64) as i64
}

/// The `length` distinct ports of step `n`.
pub fn sequence(secret: &KnockSecret, range: PortRange, length: usize, n: u64) -> Vec<Port> {
    let mut out: Vec<Port> = Vec::with_capacity(length);
    let size = range.len();
    // A block gives 16 candidates; a range of 256+ ports rarely needs a second.
    for block in 0u32.. {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose()).expect("HMAC takes any key length");
        mac.update(LABEL);
        mac.update(&n.to_be_bytes());
        mac.update(&block.to_be_bytes());
        let tag = mac.finalize().into_bytes();
        for c in tag.chunks(2) {
            let v = u16::from_be_bytes([c[0], c[1]]) as u32;
            let p = Port {
                proto: range.proto,
                port: (range.first as u32 + v % size) as u16,
            };
            if !out.contains(&p) {
                out.push(p);
                if out.len() == length {
                    return out;
                }
            }
        }
        // A range smaller than the sequence never fills; profile checks forbid it.
        if block > 64 {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_are_distinct_in_range_and_change_each_step() {
        let s = KnockSecret::from_bytes(&[7u8; 32]);
        let r: PortRange = "udp/40000-40999".parse().unwrap();
        let a = sequence(&s, r, 4, 1000);
        assert_eq!(a.len(), 4);
        assert!(a.iter().all(|p| r.contains(*p)));
        let mut d = a.clone();
        d.dedup();
        assert_eq!(d.len(), 4);
        assert_eq!(sequence(&s, r, 4, 1000), a, "deterministic");
        assert_ne!(sequence(&s, r, 4, 1001), a, "next step differs");
        assert_ne!(
            sequence(&KnockSecret::from_bytes(&[8u8; 32]), r, 4, 1000),
            a,
            "other secret differs"
        );
        // Even a tiny range yields distinct ports.
        let tiny: PortRange = "tcp/7000-7003".parse().unwrap();
        let mut t = sequence(&s, tiny, 4, 5);
        t.sort();
        assert_eq!(
            t.iter().map(|p| p.port).collect::<Vec<_>>(),
            [7000, 7001, 7002, 7003]
        );
    }

    #[test]
    fn steps() {
        let st = Duration::from_secs(30);
        assert_eq!(step_at(59_999, st), 1);
        assert_eq!(step_at(60_000, st), 2);
        assert_eq!(step_start(2, st), 60_000);
        assert_eq!(step_at(-5, st), 0);
    }
}
