//! The nfnetlink wire format for set elements, written and read by hand: a batch of element
//! messages encoded straight into one reusable buffer, and answers (acks, errors, set dumps)
//! walked in place without copying.
//!
//! Layouts follow the kernel's uapi headers (linux/netlink.h, linux/netfilter/nfnetlink.h,
//! linux/netfilter/nf_tables.h). Netlink headers are in host byte order, nftables values
//! (timeouts, expirations, the nfgenmsg resource id) in network order.

use std::net::IpAddr;

pub const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLA_HDRLEN: usize = 4;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_ACK: u16 = 0x04;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
/// On an error message: extended-ack attributes follow the echoed header.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// On an error message: the echoed request is capped to its header (NETLINK_CAP_ACK).
const NLM_F_CAPPED: u16 = 0x100;
const NLMSGERR_ATTR_MSG: u16 = 1;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;

const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
/// An interval set's element that ends an interval (its key is the first address after it).
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_DATA_VALUE: u16 = 1;

/// The largest nested attribute: its length is a u16. Elements past it go into the next message.
const MAX_NEST: usize = 0xffff & !3;

/// Message type of a set-element reply in a dump.
pub const NEWSETELEM_TYPE: u16 = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM;

/// What an element message does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Add,
    Delete,
    Flush,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_ne_bytes());
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn get_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([buf[at], buf[at + 1]])
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// A netlink message header with `len` patched in by [`Writer::end_msg`].
fn nlmsghdr(out: &mut Vec<u8>, kind: u16, flags: u16, seq: u32) {
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
}

fn nfgenmsg(out: &mut Vec<u8>, family: u8, res_id: u16) {
    out.extend_from_slice(&[family, 0]);
    out.extend_from_slice(&res_id.to_be_bytes());
}

fn attr_str(out: &mut Vec<u8>, kind: u16, s: &str) {
    let len = NLA_HDRLEN + s.len() + 1;
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(s.as_bytes());
    out.resize(out.len() + 1 + (align4(len) - len), 0);
}

/// One element: its key (4 or 16 bytes) and, when adding, a timeout in ms.
fn element(out: &mut Vec<u8>, addr: IpAddr, timeout_ms: Option<u64>) {
    let (v4, v6);
    let key: &[u8] = match addr {
        IpAddr::V4(a) => {
            v4 = a.octets();
            &v4
        }
        IpAddr::V6(a) => {
            v6 = a.octets();
            &v6
        }
    };
    let data = NLA_HDRLEN + key.len();
    let keyattr = NLA_HDRLEN + data;
    let total = NLA_HDRLEN + keyattr + if timeout_ms.is_some() { NLA_HDRLEN + 8 } else { 0 };
    let mut head = [0u8; 12];
    put_u16(&mut head, 0, total as u16);
    put_u16(&mut head, 2, NFTA_LIST_ELEM | NLA_F_NESTED);
    put_u16(&mut head, 4, keyattr as u16);
    put_u16(&mut head, 6, NFTA_SET_ELEM_KEY | NLA_F_NESTED);
    put_u16(&mut head, 8, data as u16);
    put_u16(&mut head, 10, NFTA_DATA_VALUE);
    out.extend_from_slice(&head);
    out.extend_from_slice(key);
    if let Some(ms) = timeout_ms {
        let mut t = [0u8; 12];
        put_u16(&mut t, 0, 12);
        put_u16(&mut t, 2, NFTA_SET_ELEM_TIMEOUT);
        t[4..].copy_from_slice(&ms.to_be_bytes());
        out.extend_from_slice(&t);
    }
}

/// The encoded size of one element (see [`element`]).
fn element_len(addr: IpAddr, timed: bool) -> usize {
    let key = if addr.is_ipv4() { 4 } else { 16 };
    3 * NLA_HDRLEN + key + if timed { NLA_HDRLEN + 8 } else { 0 }
}

/// Writes one nfnetlink batch into a reusable buffer.
pub struct Writer<'b> {
    out: &'b mut Vec<u8>,
    seq: u32,
    /// Where the open message starts, and where its element list starts.
    msg: Option<(usize, usize)>,
    /// Where the last closed message starts.
    last: Option<usize>,
}

impl<'b> Writer<'b> {
    /// Starts a batch for nftables; `seq` numbers its first message.
    pub fn begin(out: &'b mut Vec<u8>, seq: u32) -> Writer<'b> {
        out.clear();
        nlmsghdr(out, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq);
        nfgenmsg(out, 0, NFNL_SUBSYS_NFTABLES);
        let len = out.len() as u32;
        put_u32(out, 0, len);
        Writer {
            out,
            seq: seq.wrapping_add(1),
            msg: None,
            last: None,
        }
    }

    /// Opens an element message (`Op::Flush`: a delete with no element list) and returns its
    /// sequence number.
    pub fn start_msg(&mut self, op: Op, table: &str, set: &str) -> u32 {
        debug_assert!(self.msg.is_none());
        let (kind, flags) = match op {
            Op::Add => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE),
            Op::Delete | Op::Flush => (NFT_MSG_DELSETELEM, NLM_F_REQUEST),
        };
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let start = self.out.len();
        nlmsghdr(self.out, (NFNL_SUBSYS_NFTABLES << 8) | kind, flags, seq);
        nfgenmsg(self.out, NFPROTO_INET, 0);
        attr_str(self.out, NFTA_SET_ELEM_LIST_TABLE, table);
        attr_str(self.out, NFTA_SET_ELEM_LIST_SET, set);
        let list = self.out.len();
        if op != Op::Flush {
            self.out.extend_from_slice(&[0, 0, 0, 0]);
            put_u16(self.out, list + 2, NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED);
        }
        self.msg = Some((start, list));
        seq
    }

    /// Whether one more element fits in the open message's element list.
    pub fn fits(&self, addr: IpAddr, timed: bool) -> bool {
        let (_, list) = self.msg.expect("an open message");
        self.out.len() - list + element_len(addr, timed) <= MAX_NEST
    }

    pub fn element(&mut self, addr: IpAddr, timeout_ms: Option<u64>) {
        element(self.out, addr, timeout_ms);
    }

    /// Closes the open message.
    pub fn end_msg(&mut self) {
        let (start, list) = self.msg.take().expect("an open message");
        let end = self.out.len();
        if end > list {
            put_u16(self.out, list, (end - list) as u16);
        }
        put_u32(self.out, start, (end - start) as u32);
        self.last = Some(start);
    }

    /// Ends the batch; returns the next free sequence number. The last message asks for an
    /// acknowledgement: the kernel answers a batch's messages in order, errors whenever they
    /// occur, so that ack says every answer has arrived.
    pub fn finish(self) -> u32 {
        debug_assert!(self.msg.is_none());
        if let Some(last) = self.last {
            let flags = get_u16(self.out, last + 6) | NLM_F_ACK;
            put_u16(self.out, last + 6, flags);
        }
        let start = self.out.len();
        nlmsghdr(self.out, NFNL_MSG_BATCH_END, NLM_F_REQUEST, self.seq);
        nfgenmsg(self.out, 0, NFNL_SUBSYS_NFTABLES);
        let len = (self.out.len() - start) as u32;
        put_u32(self.out, start, len);
        self.seq.wrapping_add(1)
    }
}

/// A dump request for one set's elements.
pub fn get_set_elements(out: &mut Vec<u8>, seq: u32, table: &str, set: &str) {
    dump_request(out, seq, NFT_MSG_GETSETELEM, NFTA_SET_ELEM_LIST_TABLE, table);
    attr_str(out, NFTA_SET_ELEM_LIST_SET, set);
    let len = out.len() as u32;
    put_u32(out, 0, len);
}

/// A dump request for every object of one kind (`NFT_MSG_GET…`), narrowed to one table by its
/// attribute `table_attr`.
pub fn dump_request(out: &mut Vec<u8>, seq: u32, kind: u16, table_attr: u16, table: &str) {
    out.clear();
    nlmsghdr(
        out,
        (NFNL_SUBSYS_NFTABLES << 8) | kind,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
    );
    nfgenmsg(out, NFPROTO_INET, 0);
    attr_str(out, table_attr, table);
    let len = out.len() as u32;
    put_u32(out, 0, len);
}

/// An nftables message's attributes, past its nfgenmsg header; only messages of the inet family.
pub fn body<'a>(m: &Msg<'a>) -> Option<&'a [u8]> {
    (m.kind >> 8 == NFNL_SUBSYS_NFTABLES && m.payload.first() == Some(&NFPROTO_INET))
        .then(|| m.payload.get(NFGENMSG_LEN..))
        .flatten()
}

/// One netlink message in a received datagram.
pub struct Msg<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// The messages in one datagram; stops at the first malformed header.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Msg<'_>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if buf.len() - at < NLMSG_HDRLEN {
            return None;
        }
        let len = get_u32(buf, at) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() - at {
            return None;
        }
        let m = Msg {
            kind: get_u16(buf, at + 4),
            flags: get_u16(buf, at + 6),
            seq: get_u32(buf, at + 8),
            payload: &buf[at + NLMSG_HDRLEN..at + len],
        };
        at = (at + align4(len)).min(buf.len());
        Some(m)
    })
}

/// Attributes (type without flag bits, value) in a run of netlink attributes.
pub fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if buf.len() - at < NLA_HDRLEN {
            return None;
        }
        let len = get_u16(buf, at) as usize;
        if len < NLA_HDRLEN || len > buf.len() - at {
            return None;
        }
        let a = (
            get_u16(buf, at + 2) & NLA_TYPE_MASK,
            &buf[at + NLA_HDRLEN..at + len],
        );
        at = (at + align4(len)).min(buf.len());
        Some(a)
    })
}

/// An NLMSG_ERROR's payload: the errno (0 for an ack), the sequence number of the request it
/// answers, and the kernel's extended-ack text if any.
pub struct Answer<'a> {
    pub errno: i32,
    pub request_seq: u32,
    pub text: Option<&'a str>,
}

pub fn answer<'a>(m: &Msg<'a>) -> Option<Answer<'a>> {
    let p = m.payload;
    if p.len() < 4 + NLMSG_HDRLEN {
        return None;
    }
    let errno = -(get_u32(p, 0) as i32);
    let request_seq = get_u32(p, 4 + 8);
    let mut text = None;
    if m.flags & NLM_F_ACK_TLVS != 0 {
        // The echoed request: its header only when capped, else the whole of it.
        let echoed = if m.flags & NLM_F_CAPPED != 0 || errno == 0 {
            NLMSG_HDRLEN
        } else {
            align4(get_u32(p, 4) as usize)
        };
        if let Some(tlvs) = p.get(4 + echoed..) {
            for (kind, v) in attrs(tlvs) {
                if kind == NLMSGERR_ATTR_MSG {
                    let v = v.split(|b| *b == 0).next().unwrap_or(v);
                    text = std::str::from_utf8(v).ok().filter(|s| !s.is_empty());
                }
            }
        }
    }
    Some(Answer {
        errno,
        request_seq,
        text,
    })
}

/// NLMSG_DONE's errno (0: the dump ended well).
pub fn done_errno(m: &Msg<'_>) -> i32 {
    if m.payload.len() >= 4 {
        -(get_u32(m.payload, 0) as i32)
    } else {
        0
    }
}

/// One element of a set-element dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub addr: IpAddr,
    /// Milliseconds until the kernel drops it (`None`: no timeout).
    pub left: Option<u64>,
    /// In an interval set: it is the first address after an interval, not the start of one.
    pub interval_end: bool,
}

/// Calls `each` for every element in one set-element dump message. Keys of any length but 4
/// or 16 bytes (not an address set) are skipped.
pub fn for_each_element(m: &Msg<'_>, mut each: impl FnMut(Seen)) {
    let Some(body) = m.payload.get(NFGENMSG_LEN..) else {
        return;
    };
    for (kind, list) in attrs(body) {
        if kind != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for (kind, elem) in attrs(list) {
            if kind != NFTA_LIST_ELEM {
                continue;
            }
            let (mut addr, mut left, mut interval_end) = (None, None, false);
            for (kind, v) in attrs(elem) {
                match kind {
                    NFTA_SET_ELEM_KEY => addr = key_addr(v),
                    NFTA_SET_ELEM_EXPIRATION if v.len() == 8 => {
                        left = Some(u64::from_be_bytes(v.try_into().unwrap()));
                    }
                    NFTA_SET_ELEM_FLAGS if v.len() == 4 => {
                        interval_end =
                            u32::from_be_bytes(v.try_into().unwrap()) & NFT_SET_ELEM_INTERVAL_END != 0
                    }
                    _ => {}
                }
            }
            if let Some(addr) = addr {
                each(Seen {
                    addr,
                    left,
                    interval_end,
                });
            }
        }
    }
}

/// The address in an element's key attribute.
fn key_addr(v: &[u8]) -> Option<IpAddr> {
    attrs(v)
        .find(|(kind, _)| *kind == NFTA_DATA_VALUE)
        .and_then(|(_, key)| match key.len() {
            4 => Some(IpAddr::from(<[u8; 4]>::try_from(key).unwrap())),
            16 => Some(IpAddr::from(<[u8; 16]>::try_from(key).unwrap())),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload, Parseable};
    use netlink_packet_netfilter::nftables::{
        DataAttribute, ListAttribute, NfTablesMessage, SetElementAttribute, SetElementList,
    };
    use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner};

    fn parse_all(buf: &[u8]) -> Vec<NetlinkMessage<NetfilterMessage>> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let nb = NetlinkBuffer::new(&buf[at..]);
            let len = nb.length() as usize;
            let one: &[u8] = &buf[at..at + len];
            out.push(NetlinkMessage::parse(&NetlinkBuffer::new(&one)).unwrap());
            at += align4(len);
        }
        out
    }

    fn elems(m: &NetlinkMessage<NetfilterMessage>) -> (String, Vec<SetElementList>) {
        let NetlinkPayload::InnerMessage(nf) = &m.payload else {
            panic!("not an inner message: {m:?}")
        };
        match &nf.inner {
            NetfilterMessageInner::NfTables(NfTablesMessage::NewSetElement(e)) => {
                ("new".into(), e.attributes.clone())
            }
            NetfilterMessageInner::NfTables(NfTablesMessage::DeleteSetElement(e)) => {
                ("del".into(), e.attributes.clone())
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The hand encoding reads back through netlink-packet-netfilter as the messages nft would
    /// send: batch begin, a timed add, a delete, a flush, batch end, lengths and flags right.
    #[test]
    fn batch_encodes_as_the_crate_reads_it() {
        let mut buf = Vec::new();
        let mut w = Writer::begin(&mut buf, 7);
        let s1 = w.start_msg(Op::Add, "passknock", "allow_sip_v4");
        w.element("203.0.113.7".parse().unwrap(), Some(3_600_500));
        w.end_msg();
        let s2 = w.start_msg(Op::Delete, "passknock", "ban_v6");
        w.element("2001:db8::6".parse().unwrap(), None);
        w.end_msg();
        let s3 = w.start_msg(Op::Flush, "passknock", "ban_v4");
        w.end_msg();
        let next = w.finish();
        assert_eq!((s1, s2, s3, next), (8, 9, 10, 12));
        let msgs = parse_all(&buf);
        assert_eq!(msgs.len(), 5);
        assert_eq!(msgs[0].header.message_type, 0x10);
        assert_eq!(msgs[4].header.message_type, 0x11);
        assert_eq!(msgs[4].header.sequence_number, 11);
        let (kind, a) = elems(&msgs[1]);
        assert_eq!(kind, "new");
        assert_eq!(msgs[1].header.flags, 0x401);
        assert_eq!(
            a,
            vec![
                SetElementList::Table("passknock".into()),
                SetElementList::Set("allow_sip_v4".into()),
                SetElementList::Elements(vec![ListAttribute::Element(vec![
                    SetElementAttribute::Key(DataAttribute::Value(vec![203, 0, 113, 7])),
                    SetElementAttribute::Timeout(3_600_500),
                ])]),
            ]
        );
        let (kind, a) = elems(&msgs[2]);
        assert_eq!(kind, "del");
        let six: std::net::Ipv6Addr = "2001:db8::6".parse().unwrap();
        assert_eq!(
            a[2],
            SetElementList::Elements(vec![ListAttribute::Element(vec![SetElementAttribute::Key(
                DataAttribute::Value(six.octets().to_vec())
            )])])
        );
        let (kind, a) = elems(&msgs[3]);
        assert_eq!(kind, "del");
        assert_eq!(a.len(), 2, "a flush names the set and lists no elements");
        assert_eq!(msgs[3].header.flags, 0x5, "request and ack");
    }

    /// A message's element list stops short of the u16 length limit.
    #[test]
    fn element_lists_stay_under_the_nested_limit() {
        let mut buf = Vec::new();
        let mut w = Writer::begin(&mut buf, 1);
        w.start_msg(Op::Add, "t", "s");
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let mut n = 0;
        while w.fits(a, true) {
            w.element(a, Some(1));
            n += 1;
        }
        w.end_msg();
        w.finish();
        assert_eq!(
            n,
            (MAX_NEST - 4) / 40,
            "40 bytes an element, after the list's own header"
        );
        assert_eq!(parse_all(&buf).len(), 3);
    }

    /// A dump message as the kernel writes it is walked back to addresses and time left.
    #[test]
    fn walks_a_dump_message() {
        let mut buf = Vec::new();
        let mut w = Writer::begin(&mut buf, 1);
        w.start_msg(Op::Add, "t", "s");
        w.element("198.51.100.9".parse().unwrap(), Some(5));
        w.element("2001:db8::9".parse().unwrap(), None);
        w.end_msg();
        w.finish();
        // Re-tag the timeout as an expiration, as a dump reports it.
        let m = messages(&buf).nth(1).unwrap();
        let mut payload = m.payload.to_vec();
        let at = payload.windows(4).position(|w| w == [12, 0, 4, 0]).unwrap();
        payload[at + 2] = NFTA_SET_ELEM_EXPIRATION as u8;
        let m = Msg {
            kind: NEWSETELEM_TYPE,
            flags: 2,
            seq: 1,
            payload: &payload,
        };
        let mut got = Vec::new();
        for_each_element(&m, |e| got.push((e.addr, e.left)));
        assert_eq!(
            got,
            vec![
                ("198.51.100.9".parse().unwrap(), Some(5)),
                ("2001:db8::9".parse().unwrap(), None)
            ]
        );
    }
}
