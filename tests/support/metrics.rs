//! Reads the daemon's Prometheus endpoint (`[metrics]`) from inside its namespace: gauges, and
//! histograms whose buckets a bench subtracts (after − before) to see one phase alone.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::netns::Netns;

/// One `GET /metrics` answer's body.
pub struct Scrape {
    pub text: String,
}

/// `GET /metrics` on `addr` in `ns`.
pub fn scrape(ns: &Netns, addr: SocketAddr) -> Scrape {
    let mut s = ns
        .within(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("metrics endpoint {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "metrics: {head}");
    Scrape {
        text: body.to_string(),
    }
}

impl Scrape {
    /// The value of the sample named exactly `name` (labels included, if any).
    pub fn value(&self, name: &str) -> Option<f64> {
        self.text.lines().find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name).then(|| v.parse().ok())?
        })
    }

    /// The histogram `name` (without `_bucket`): cumulative counts by upper bound.
    pub fn histogram(&self, name: &str) -> Histogram {
        let prefix = format!("{name}_bucket{{le=\"");
        let buckets = self
            .text
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(&prefix)?;
                let (le, n) = rest.split_once("\"} ")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, n.parse().ok()?))
            })
            .collect();
        Histogram {
            buckets,
            count: self.value(&format!("{name}_count")).unwrap_or(0.0) as u64,
        }
    }
}

/// A histogram's cumulative buckets: (upper bound in seconds, observations at or below it).
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
}

impl Histogram {
    /// What was observed since `before` (the same histogram, scraped earlier).
    pub fn since(&self, before: &Histogram) -> Histogram {
        let old = |le: f64| {
            before
                .buckets
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0, |(_, n)| *n)
        };
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|(le, n)| (*le, n.saturating_sub(old(*le))))
                .collect(),
            count: self.count.saturating_sub(before.count),
        }
    }

    /// The upper bound of the bucket the `q` quantile falls in, seconds (infinite past the last
    /// bound); `None` without observations.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64) * q).ceil().max(1.0) as u64;
        self.buckets
            .iter()
            .find(|(_, n)| *n >= rank)
            .map(|(le, _)| *le)
            .or(Some(f64::INFINITY))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantiles_fall_in_buckets_and_phases_subtract() {
        use super::*;
        let before = Scrape {
            text: "h_bucket{le=\"0.001\"} 1\nh_bucket{le=\"0.01\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n"
                .into(),
        }
        .histogram("h");
        let after = Scrape {
            text: "h_bucket{le=\"0.001\"} 91\nh_bucket{le=\"0.01\"} 100\nh_bucket{le=\"+Inf\"} 101\nh_count 101\ng 7\n"
                .into(),
        };
        assert_eq!(after.value("g"), Some(7.0));
        let h = after.histogram("h").since(&before);
        assert_eq!(h.count, 100);
        assert_eq!(h.quantile_bound(0.5), Some(0.001));
        assert_eq!(h.quantile_bound(0.99), Some(0.01));
        assert_eq!(h.quantile_bound(1.0), Some(f64::INFINITY));
        assert_eq!(Histogram::default().quantile_bound(0.5), None);
    }
}
