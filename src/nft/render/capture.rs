//! The SIP capture's rules: dropped SIP requests on the SIP service's UDP ports logged to their
//! NFLOG group under a per-source meter and a global limit.

use nftables::expr::{Elem, Expression, NamedExpression, Payload, PayloadField, CT};
use nftables::stmt::{Limit, Log, Meter, Statement};

use super::{dport_in, ip_protocol, matches, merge, s, Layout};
use crate::base::addr::Family;
use crate::base::defaults;
use crate::config::{Proto, SipCapture};

impl Layout {
    /// The name of the per-source limit (an nft meter) of the SIP capture, per family.
    pub fn sip_meter(f: Family) -> String {
        format!("sip_attempt_{}", f.suffix())
    }

    /// A SIP request on the capture's UDP ports that reaches here is dropped: not trusted, not
    /// banned (dropped silently above), not allowed for any service. Within a per-source limit
    /// (a meter keyed by source address, entries timing out when idle, at most nft's default
    /// 65535 sources: when it is full a new source is not logged, so a flood from more sources
    /// than that costs nothing but goes unseen until entries time out) and then a global one, it is logged with its payload first; over either
    /// limit it falls through to the silent drop below. Original direction only, like knocks.
    pub(super) fn sip_capture_rules(&self) -> Vec<Vec<Statement<'static>>> {
        let Some(c) = &self.sip_capture else {
            return Vec::new();
        };
        let ports = merge(c.ports.iter().filter(|p| p.proto == Proto::Udp));
        if ports.is_empty() {
            return Vec::new();
        }
        let limit = |rate: u32, burst: u32| {
            Statement::Limit(Limit {
                rate,
                rate_unit: None,
                per: Some("second".into()),
                burst: Some(burst),
                burst_unit: None,
                inv: None,
            })
        };
        [Family::V4, Family::V6]
            .into_iter()
            .map(|f| {
                let saddr =
                    Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
                        protocol: ip_protocol(f).into(),
                        field: "saddr".into(),
                    })));
                vec![
                    dport_in(Proto::Udp, &ports),
                    matches(
                        Expression::Named(NamedExpression::CT(CT {
                            key: "direction".into(),
                            family: None,
                            dir: None,
                        })),
                        s("original"),
                    ),
                    Statement::Meter(Meter {
                        name: Layout::sip_meter(f).into(),
                        key: Expression::Named(NamedExpression::Elem(Elem {
                            val: Box::new(saddr),
                            timeout: Some(meter_timeout(c)),
                            expires: None,
                            comment: None,
                            counter: None,
                        })),
                        stmt: Box::new(limit(c.per_source_rate, c.per_source_burst)),
                    }),
                    limit(c.rate, c.burst),
                    Statement::Log(Some(Log {
                        prefix: None,
                        group: Some(c.group as u32),
                        snaplen: Some(defaults::SIP_CAPTURE_LEN),
                        queue_threshold: None,
                        level: None,
                        flags: None,
                    })),
                    Statement::Drop(None),
                ]
            })
            .collect()
    }
}

/// Seconds an idle source keeps its place in the SIP capture's meter: until its bucket would be
/// full again, and at least [`defaults::SIP_LOG_SOURCE_TIMEOUT_MIN_SECS`].
fn meter_timeout(c: &SipCapture) -> u32 {
    (c.per_source_burst.div_ceil(c.per_source_rate.max(1)) + 1).max(defaults::SIP_LOG_SOURCE_TIMEOUT_MIN_SECS)
}
