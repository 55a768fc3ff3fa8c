//! The SIP doors' rules: a `REGISTER sip:<secret name>` matched on the UDP payload in the kernel,
//! and responsive SIP's per-source rate limit, with a named counter of what it drops.

use nftables::expr::{
    BinaryOperation, Elem, Expression, NamedExpression, Payload, PayloadBase, PayloadField, PayloadRaw,
    SetItem, CT,
};
use nftables::schema::{Counter as CounterObject, NfListObject, NfObject};
use nftables::stmt::{Counter, Limit, Match, Meter, Operator, Statement};
use nftables::types::NfFamily;

use super::{add, dport_in, ip_protocol, matches, merge, s, Layout};
use crate::base::addr::Family;
use crate::config::{Proto, Responsive, SecretDomain};

/// The named counter of what responsive SIP drops over its rate: `status`, metrics and tests read
/// it with `nft list counter inet <table> sip_rate_drops`.
pub const SIP_RATE_DROPS: &str = "sip_rate_drops";

/// What follows the name in a request URI that names the host alone: the space before
/// `SIP/2.0`, a port's `:`, a parameter's `;`, or the `>` of a bracketed URI. Anything else (a
/// `.`, a letter) would be a longer name that merely starts with the secret one.
pub const NAME_ENDS: [u8; 4] = [b' ', b':', b';', b'>'];

/// The most bytes one kernel compare holds (`struct nft_data`: 16 bytes); a longer prefix is
/// matched as several compares in one rule.
const COMPARE_MAX: usize = 16;

impl Layout {
    /// The per-source limit (an nft meter) of responsive SIP, per protocol and family.
    pub fn sip_rate_meter(proto: Proto, f: Family) -> String {
        format!("sip_rate_{}_{}", proto.name(), f.suffix())
    }

    /// The same layout, with the secret domain and responsive SIP as given (`None`: off).
    pub fn with_sip_door(mut self, secret: Option<SecretDomain>, responsive: Option<Responsive>) -> Layout {
        self.secret_domain = secret;
        self.responsive = responsive;
        self
    }

    /// The doors' part of the layout's fingerprint: each only when on, so a table built without
    /// them keeps the fingerprint it had before they existed.
    pub(super) fn sip_door_fingerprint(&self, eat: &mut dyn FnMut(&str)) {
        if let Some(d) = &self.secret_domain {
            eat("sip-secret-domain");
            for n in &d.names {
                eat(n);
            }
            for p in &d.ports {
                eat(&p.to_string());
            }
        }
        if let Some(r) = &self.responsive {
            eat("sip-responsive");
            eat(&r.rate.to_string());
            eat(&r.burst.to_string());
            for p in &r.ports {
                eat(&p.to_string());
            }
        }
    }

    /// One line for `status`: what the doors do, or `None` when both are off.
    pub fn sip_door_summary(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(d) = &self.secret_domain {
            let n = d.names.len();
            parts.push(format!(
                "secret domain on for {n} name{}",
                if n == 1 { "" } else { "s" }
            ));
        }
        if let Some(r) = &self.responsive {
            parts.push(format!("responsive {}/min burst {}", r.rate, r.burst));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// The objects the doors add to the table: the drop counter, when responsive SIP is on.
    pub(super) fn sip_door_objects(&self) -> Vec<NfObject<'static>> {
        if self.responsive.is_none() {
            return Vec::new();
        }
        vec![add(NfListObject::Counter(CounterObject {
            family: NfFamily::INet,
            table: self.table.clone().into(),
            name: SIP_RATE_DROPS.into(),
            handle: None,
            packets: Some(0),
            bytes: Some(0),
        }))]
    }

    /// After the bans, trusted, standing and granted sources (each decided above), before the SIP
    /// capture and the drop of every protected port: the secret domain's REGISTERs accept, then
    /// responsive SIP's requests within their source's rate accept and those over it drop,
    /// counted. Nothing here opens a port outside the doors' own service.
    pub(super) fn sip_door_rules(&self) -> Vec<Vec<Statement<'static>>> {
        let mut rules = Vec::new();
        if let Some(d) = &self.secret_domain {
            let ports = merge(d.ports.iter().filter(|p| p.proto == Proto::Udp));
            if !ports.is_empty() {
                for name in &d.names {
                    let mut rule = vec![dport_in(Proto::Udp, &ports)];
                    rule.extend(register_prefix(name));
                    rule.push(Statement::Accept(None));
                    rules.push(rule);
                }
            }
        }
        if let Some(r) = &self.responsive {
            rules.extend(responsive_rules(r));
        }
        rules
    }
}

/// The compares that find `REGISTER sip:<name>` and one of [`NAME_ENDS`] at the start of the UDP
/// payload (`@ih`, the bytes after the transport header), 16 bytes to a compare.
pub(super) fn register_prefix(name: &str) -> Vec<Statement<'static>> {
    let text = format!("REGISTER sip:{name}");
    let bytes = text.as_bytes();
    let mut out: Vec<Statement<'static>> = bytes
        .chunks(COMPARE_MAX)
        .enumerate()
        .map(|(i, chunk)| {
            let hex: String = chunk.iter().map(|b| format!("{b:02x}")).collect();
            matches(payload_at(i * COMPARE_MAX, chunk.len()), s(&format!("0x{hex}")))
        })
        .collect();
    out.push(matches(
        payload_at(bytes.len(), 1),
        Expression::Named(NamedExpression::Set(
            NAME_ENDS
                .iter()
                .map(|b| SetItem::Element(Expression::Number(*b as u32)))
                .collect(),
        )),
    ));
    out
}

/// `@ih,<bits>,<bits>`: `len` bytes of the transport payload from byte `at`.
fn payload_at(at: usize, len: usize) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadRaw(PayloadRaw {
        base: PayloadBase::IH,
        offset: (at * 8) as u32,
        len: (len * 8) as u32,
    })))
}

/// Per family, UDP (every packet) and TCP (each new connection) to the service's ports accept
/// while their source stays within its rate: a meter keyed by source address (IPv6: its /64), each entry kept
/// until its bucket would be full again. Then the rest: established TCP connections accepted above
/// go on; requests over the rate drop, counted. The accept sits inside the limit, so a meter
/// that is full (65535 sources) fails closed: a source it cannot hold is dropped, not let through.
fn responsive_rules(r: &Responsive) -> Vec<Vec<Statement<'static>>> {
    let udp = merge(r.ports.iter().filter(|p| p.proto == Proto::Udp));
    let tcp = merge(r.ports.iter().filter(|p| p.proto == Proto::Tcp));
    // `in`: ct state is a bit mask, tested as nft writes `ct state new`.
    let ct_state = |state: &str| {
        Statement::Match(Match {
            left: Expression::Named(NamedExpression::CT(CT {
                key: "state".into(),
                family: None,
                dir: None,
            })),
            right: s(state),
            op: Operator::IN,
        })
    };
    let meter = |proto: Proto, f: Family| {
        let saddr = Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
            protocol: ip_protocol(f).into(),
            field: "saddr".into(),
        })));
        // An IPv6 host holds a whole /64 and picks any address in it: one bucket per /64, or a
        // scanner walks its own prefix past the limit.
        let source = match f {
            Family::V4 => saddr,
            Family::V6 => {
                Expression::BinaryOperation(Box::new(BinaryOperation::AND(saddr, s("ffff:ffff:ffff:ffff::"))))
            }
        };
        Statement::Meter(Meter {
            name: Layout::sip_rate_meter(proto, f).into(),
            key: Expression::Named(NamedExpression::Elem(Elem {
                val: Box::new(source),
                timeout: Some(meter_timeout(r)),
                expires: None,
                comment: None,
                counter: None,
            })),
            stmt: Box::new(Statement::Limit(Limit {
                rate: r.rate,
                rate_unit: None,
                per: Some("minute".into()),
                burst: Some(r.burst),
                burst_unit: None,
                inv: None,
            })),
        })
    };
    let mut rules = Vec::new();
    for f in [Family::V4, Family::V6] {
        if !udp.is_empty() {
            rules.push(vec![
                dport_in(Proto::Udp, &udp),
                meter(Proto::Udp, f),
                Statement::Accept(None),
            ]);
        }
        if !tcp.is_empty() {
            rules.push(vec![
                dport_in(Proto::Tcp, &tcp),
                ct_state("new"),
                meter(Proto::Tcp, f),
                Statement::Accept(None),
            ]);
        }
    }
    let counted = || Statement::Counter(Counter::Named(SIP_RATE_DROPS.into()));
    if !tcp.is_empty() {
        rules.push(vec![
            dport_in(Proto::Tcp, &tcp),
            ct_state("established"),
            Statement::Accept(None),
        ]);
    }
    if !udp.is_empty() {
        rules.push(vec![dport_in(Proto::Udp, &udp), counted(), Statement::Drop(None)]);
    }
    if !tcp.is_empty() {
        rules.push(vec![
            dport_in(Proto::Tcp, &tcp),
            ct_state("new"),
            counted(),
            Statement::Drop(None),
        ]);
    }
    rules
}

/// Seconds an idle source keeps its place in the meter: until its bucket would be full again
/// (so forgetting it gives nothing away), and at least a minute.
fn meter_timeout(r: &Responsive) -> u32 {
    (r.burst.saturating_mul(60).div_ceil(r.rate.max(1)) + 1).max(60)
}
