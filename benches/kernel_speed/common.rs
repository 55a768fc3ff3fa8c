//! What the kernel-speed figures share: addresses, samples and their quantiles, the daemon's
//! control socket, reading a set back from nft, and the final table.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use passknock::base::duration::Ttl;
use passknock::control::{client, Reply, Request};

use crate::support::metrics::Histogram;
use crate::support::netns::Netns;

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Address `i` of block `block` (0..32): each block is its own /15 inside 100.64.0.0/10, so the
/// figures never touch each other's addresses. Skips .0 and .255.
pub fn addr(block: u8, i: u32) -> Ipv4Addr {
    assert!(block < 32 && i < 120_000);
    let n = i / 254 * 256 + i % 254 + 1;
    Ipv4Addr::new(100, 64 + 2 * block + (n >> 16) as u8, (n >> 8) as u8, n as u8)
}

/// Samples in ms, sorted.
#[derive(Clone, Debug, Default)]
pub struct Samples(Vec<f64>);

impl Samples {
    pub fn new(mut v: Vec<f64>) -> Samples {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        Samples(v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn q(&self, p: f64) -> Option<f64> {
        (!self.0.is_empty()).then(|| self.0[((self.0.len() as f64 - 1.0) * p).round() as usize])
    }

    pub fn max(&self) -> Option<f64> {
        self.0.last().copied()
    }

    /// `n=… median=… p99=… max=…`, or "no samples".
    pub fn line(&self) -> String {
        match (self.q(0.5), self.q(0.99), self.max()) {
            (Some(m), Some(p), Some(x)) => {
                format!("n={} median={m:.2} ms p99={p:.2} ms max={x:.2} ms", self.0.len())
            }
            _ => "no samples".into(),
        }
    }
}

/// A histogram quantile as the bucket it falls in: `≤ 0.25 ms`, `> 5000 ms`, "no samples".
pub fn bucket_text(h: &Histogram, q: f64) -> String {
    match h.quantile_bound(q) {
        None => "no samples".into(),
        Some(b) if b.is_infinite() => {
            let last = h
                .buckets
                .iter()
                .rev()
                .find(|(le, _)| le.is_finite())
                .map_or(0.0, |(le, _)| *le);
            format!("> {} ms", last * 1000.0)
        }
        Some(b) => format!("≤ {} ms", b * 1000.0),
    }
}

/// `HISTOGRAM p50 … p99 … (n)` in bucket bounds, for one phase.
pub fn histogram_line(h: &Histogram) -> String {
    if h.count == 0 {
        return "no samples".into();
    }
    format!(
        "p50 {}, p99 {} (n={}, bucket bounds)",
        bucket_text(h, 0.5),
        bucket_text(h, 0.99),
        h.count
    )
}

/// One grant over the control socket (no CLI process); panics unless it is granted and in nft.
pub fn grant(socket: &Path, address: IpAddr) {
    let req = Request::Grant {
        address: address.to_string(),
        services: vec!["sip".into()],
        ttl: Some(Ttl(Duration::from_secs(3600))),
        note: String::new(),
    };
    match client::call(socket, &req) {
        Ok(Reply::Granted { firewall, .. }) => {
            assert!(firewall.error.is_none(), "grant {address}: {:?}", firewall.error)
        }
        other => panic!("grant {address}: {other:?}"),
    }
}

/// The AMI listener's view, from the daemon.
pub fn ami_status(socket: &Path) -> passknock::control::AmiStatus {
    match client::call(socket, &Request::Contacts) {
        Ok(Reply::Contacts { ami, .. }) => ami,
        other => panic!("contacts: {other:?}"),
    }
}

/// The addresses in `inet passknock SET`, or in its shards when split (none if it is absent).
pub fn set_members(ns: &Netns, set: &str) -> HashSet<String> {
    let mut found = HashSet::new();
    if !list_into(ns, set, &mut found) {
        // Split in shards (`firewall.shards`): `set_0`, `set_1`, … up to the first missing.
        let mut i = 0;
        while list_into(ns, &format!("{set}_{i}"), &mut found) {
            i += 1;
        }
    }
    found
}

/// Adds one set's elements to `found`; false when there is no such set.
fn list_into(ns: &Netns, set: &str, found: &mut HashSet<String>) -> bool {
    let out = ns
        .command("nft")
        .args(["-j", "list", "set", "inet", "passknock", set])
        .output()
        .unwrap();
    if !out.status.success() {
        return false;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft -j output");
    for item in v["nftables"].as_array().into_iter().flatten() {
        for e in item["set"]["elem"].as_array().into_iter().flatten() {
            // A bare value, or {"elem": {"val": …, "timeout": …, "expires": …}}.
            let val = if e.is_string() { e } else { &e["elem"]["val"] };
            if let Some(s) = val.as_str() {
                found.insert(s.to_string());
            }
        }
    }
    true
}

/// How many of `want` are in `have`.
pub fn present(have: &HashSet<String>, want: impl IntoIterator<Item = Ipv4Addr>) -> usize {
    want.into_iter().filter(|a| have.contains(&a.to_string())).count()
}

/// One cell of the final table: a number to take the ratio of, and how to show it.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    pub value: Option<f64>,
    pub text: String,
}

impl Cell {
    pub fn ms(v: Option<f64>) -> Cell {
        Cell {
            value: v,
            text: v.map_or("no samples".into(), |v| format!("{v:.2} ms")),
        }
    }

    pub fn text(value: Option<f64>, text: String) -> Cell {
        Cell { value, text }
    }

    /// A histogram quantile: the bucket's bound is the value.
    pub fn bucket(h: &Histogram, q: f64) -> Cell {
        Cell {
            value: h.quantile_bound(q).filter(|b| b.is_finite()).map(|b| b * 1000.0),
            text: bucket_text(h, q),
        }
    }
}

/// Prints `target | netlink | nft | nft/netlink` rows.
pub fn table(rows: &[(String, &str, Cell, Cell)]) {
    let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0).max(6);
    let w2 = rows
        .iter()
        .map(|r| r.2.text.chars().count())
        .max()
        .unwrap_or(0)
        .max(7);
    let w3 = rows
        .iter()
        .map(|r| r.3.text.chars().count())
        .max()
        .unwrap_or(0)
        .max(3);
    let pad = |s: &str, w: usize| format!("{s}{}", " ".repeat(w.saturating_sub(s.chars().count())));
    println!(
        "{} | {} | {} | {} | ratio nft/netlink",
        pad("figure", w0),
        pad("target", w1),
        pad("netlink", w2),
        pad("nft", w3)
    );
    println!("{}", "-".repeat(w0 + w1 + w2 + w3 + 30));
    for (name, target, new, old) in rows {
        let ratio = match (old.value, new.value) {
            (Some(o), Some(n)) if n > 0.0 => format!("{:.2}", o / n),
            _ => "n/a".into(),
        };
        println!(
            "{} | {} | {} | {} | {ratio}",
            pad(name, w0),
            pad(target, w1),
            pad(&new.text, w2),
            pad(&old.text, w3)
        );
    }
}
