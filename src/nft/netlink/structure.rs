//! A table's structure as three netlink dumps read it: its sets (name, key type, flags), its
//! chains (name, hook, priority, policy, type) and each chain's rules' comments, in order. This
//! is what the read-back compares with the layout; `nft` cannot list a chain without reading
//! the elements of every set its rules name. Also a named counter's packets, from a fourth.

use std::collections::BTreeMap;

use super::codec::{self, Msg};

const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_NEWOBJ: u16 = 18;
/// The dump of a table's stateful objects (named counters among them).
pub const NFT_MSG_GETOBJ: u16 = 19;
const NFTA_OBJ_NAME: u16 = 2;
const NFTA_OBJ_TYPE: u16 = 3;
const NFTA_OBJ_DATA: u16 = 4;
const NFT_OBJECT_COUNTER: u32 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;

/// Every object kind's first attribute is its table's name (NFTA_SET_TABLE, NFTA_CHAIN_TABLE,
/// NFTA_RULE_TABLE).
const TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_USERDATA: u16 = 7;
/// The comment's tag in a rule's user data (libnftnl's NFTNL_UDATA_RULE_COMMENT).
const UDATA_RULE_COMMENT: u8 = 0;

const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_TIMEOUT: u32 = 0x10;
const NFT_SET_EVAL: u32 = 0x20;
/// nft's data type numbers for address keys.
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;

/// The three dumps, in the order they are read.
pub const KINDS: [u16; 3] = [NFT_MSG_GETSET, NFT_MSG_GETCHAIN, NFT_MSG_GETRULE];

/// A named set as the kernel has it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetShape {
    /// nft's name of the key type (`ipv4_addr`, `ipv6_addr`), or `other`.
    pub type_name: String,
    /// nft's names of the flags that matter here: `interval`, `timeout`.
    pub flags: Vec<String>,
}

/// A chain as the kernel has it; base chains have a hook.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainShape {
    pub kind: Option<String>,
    pub hook: Option<String>,
    pub prio: Option<i64>,
    pub policy: Option<String>,
    /// Its rules' comments, in order.
    pub rules: Vec<Option<String>>,
}

/// One table's sets and chains.
#[derive(Debug, Default)]
pub struct Structure {
    /// Named sets; anonymous sets and meters (the kernel fills those) are left out.
    pub sets: BTreeMap<String, SetShape>,
    pub chains: BTreeMap<String, ChainShape>,
    /// Whether any object of the table was seen at all.
    pub table_seen: bool,
}

/// A dump request for every object of one kind in table `inet <table>`.
pub fn request(out: &mut Vec<u8>, seq: u32, kind: u16, table: &str) {
    codec::dump_request(out, seq, kind, TABLE, table);
}

fn text(v: &[u8]) -> String {
    let v = v.split(|b| *b == 0).next().unwrap_or(v);
    String::from_utf8_lossy(v).into_owned()
}

fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

impl Structure {
    /// Takes in one answer of a dump, if it is of `table`.
    pub fn take(&mut self, m: &Msg<'_>, table: &str) {
        let Some(body) = codec::body(m) else {
            return;
        };
        let of_table = codec::attrs(body).any(|(k, v)| k == TABLE && text(v) == table);
        if !of_table {
            return;
        }
        self.table_seen = true;
        match m.kind & 0xff {
            NFT_MSG_NEWSET => self.take_set(body),
            NFT_MSG_NEWCHAIN => self.take_chain(body),
            NFT_MSG_NEWRULE => self.take_rule(body),
            _ => {}
        }
    }

    fn take_set(&mut self, body: &[u8]) {
        let (mut name, mut flags, mut key) = (None, 0, 0);
        for (k, v) in codec::attrs(body) {
            match k {
                NFTA_SET_NAME => name = Some(text(v)),
                NFTA_SET_FLAGS => flags = be32(v).unwrap_or(0),
                NFTA_SET_KEY_TYPE => key = be32(v).unwrap_or(0),
                _ => {}
            }
        }
        let Some(name) = name else {
            return;
        };
        if flags & (NFT_SET_ANONYMOUS | NFT_SET_EVAL) != 0 {
            return;
        }
        let type_name = match key {
            TYPE_IPADDR => "ipv4_addr",
            TYPE_IP6ADDR => "ipv6_addr",
            _ => "other",
        };
        let mut names = Vec::new();
        if flags & NFT_SET_INTERVAL != 0 {
            names.push("interval".to_string());
        }
        if flags & NFT_SET_TIMEOUT != 0 {
            names.push("timeout".to_string());
        }
        self.sets.insert(
            name,
            SetShape {
                type_name: type_name.into(),
                flags: names,
            },
        );
    }

    fn take_chain(&mut self, body: &[u8]) {
        let mut name = None;
        let mut c = ChainShape::default();
        for (k, v) in codec::attrs(body) {
            match k {
                NFTA_CHAIN_NAME => name = Some(text(v)),
                NFTA_CHAIN_TYPE => c.kind = Some(text(v)),
                NFTA_CHAIN_POLICY => {
                    c.policy = be32(v).map(|p| if p == 1 { "accept" } else { "drop" }.to_string())
                }
                NFTA_CHAIN_HOOK => {
                    for (k, v) in codec::attrs(v) {
                        match k {
                            NFTA_HOOK_HOOKNUM => c.hook = be32(v).map(|h| hook_name(h).to_string()),
                            NFTA_HOOK_PRIORITY => c.prio = be32(v).map(|p| i64::from(p as i32)),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(name) = name {
            let rules = self.chains.remove(&name).map(|c| c.rules).unwrap_or_default();
            self.chains.insert(name, ChainShape { rules, ..c });
        }
    }

    fn take_rule(&mut self, body: &[u8]) {
        let (mut chain, mut comment) = (None, None);
        for (k, v) in codec::attrs(body) {
            match k {
                NFTA_RULE_CHAIN => chain = Some(text(v)),
                NFTA_RULE_USERDATA => comment = rule_comment(v),
                _ => {}
            }
        }
        if let Some(chain) = chain {
            self.chains.entry(chain).or_default().rules.push(comment);
        }
    }
}

/// The packets of counter `name` of `table`, if `m` is that counter.
pub fn counter_packets(m: &Msg<'_>, table: &str, name: &str) -> Option<u64> {
    if m.kind & 0xff != NFT_MSG_NEWOBJ {
        return None;
    }
    let body = codec::body(m)?;
    let (mut ours, mut named, mut counter, mut packets) = (false, false, false, None);
    for (k, v) in codec::attrs(body) {
        match k {
            TABLE => ours = text(v) == table,
            NFTA_OBJ_NAME => named = text(v) == name,
            NFTA_OBJ_TYPE => counter = be32(v) == Some(NFT_OBJECT_COUNTER),
            NFTA_OBJ_DATA => {
                packets = codec::attrs(v)
                    .find(|(k, _)| *k == NFTA_COUNTER_PACKETS)
                    .and_then(|(_, v)| Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?)))
            }
            _ => {}
        }
    }
    (ours && named && counter).then_some(packets).flatten()
}

/// The comment in a rule's user data: tag, length, value (with its NUL), one after another.
fn rule_comment(mut udata: &[u8]) -> Option<String> {
    while udata.len() >= 2 {
        let (tag, len) = (udata[0], usize::from(udata[1]));
        let value = udata.get(2..2 + len)?;
        if tag == UDATA_RULE_COMMENT {
            return Some(text(value));
        }
        udata = &udata[2 + len..];
    }
    None
}

/// nft's name of an inet hook number.
fn hook_name(n: u32) -> &'static str {
    match n {
        0 => "prerouting",
        1 => "input",
        2 => "forward",
        3 => "output",
        4 => "postrouting",
        5 => "ingress",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_s_comment_is_found_among_its_user_data() {
        assert_eq!(rule_comment(b"\x00\x04abc\x00"), Some("abc".into()));
        // Another tag first, then the comment.
        assert_eq!(rule_comment(b"\x07\x01x\x00\x03ok\x00"), Some("ok".into()));
        assert_eq!(rule_comment(b"\x00\x09short"), None, "a length past the end");
        assert_eq!(rule_comment(b""), None);
    }
}
