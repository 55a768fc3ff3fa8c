//! The table's desired state as one value, built from layout, grants and bans, and the element
//! changes that bring one address or one ban in line with it. Set names are spelled here and in
//! the renderer, nowhere above.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::render::{allow_set, ban_set, Changes, ElemKey, Elements, Layout};
use crate::base::addr::Family;
use crate::base::clock::{Clock, Now, UnixMs};
use crate::model::{Ban, Grant};

/// The elements the store wants at one instant: each live grant's services and each live ban.
/// An element ends at the latest end among the grants that ask for it, held by the [`Clock`] to
/// its time truly left; one whose time is up on either clock is left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    elements: Elements,
}

impl Desired {
    /// The desired state of `grants` and `bans` under `layout` at `now`.
    pub fn build<'a>(
        layout: &Layout,
        grants: impl IntoIterator<Item = &'a Grant>,
        bans: &[Ban],
        clock: &mut Clock,
        now: Now,
    ) -> Desired {
        let mut out = Desired::default();
        for g in grants {
            out.add_grant(
                layout,
                g.address,
                g.services.iter().map(String::as_str),
                g.end(),
                clock,
                now,
            );
        }
        for b in bans {
            out.add_ban(b.address, b.expires, clock, now);
        }
        out
    }

    /// Adds one grant (address, services, end). A service the config has since dropped opens
    /// nothing.
    pub fn add_grant<'s>(
        &mut self,
        layout: &Layout,
        address: IpAddr,
        services: impl IntoIterator<Item = &'s str>,
        end: UnixMs,
        clock: &mut Clock,
        now: Now,
    ) {
        let Some(end) = clock.end(address, end, now) else {
            return;
        };
        for svc in services {
            if layout.has_service(svc) {
                let e = self.elements.entry(allow_key(svc, address)).or_insert(0);
                *e = (*e).max(end);
            }
        }
    }

    /// Adds one ban until `expires`.
    pub fn add_ban(&mut self, address: IpAddr, expires: UnixMs, clock: &mut Clock, now: Now) {
        if let Some(end) = clock.end(address, expires, now) {
            self.elements.insert(ban_key(address), end);
        }
    }

    pub fn elements(&self) -> &Elements {
        &self.elements
    }

    pub fn len(&self) -> usize {
        self.elements.len()
    }

    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// Every element set to its end: what a new grant or ban adds to the table.
    pub fn into_changes(self) -> Changes {
        Changes {
            set: self.elements.into_iter().collect(),
            remove: vec![],
        }
    }

    /// Brings `address`'s allow elements in line with this state (built from its live grants):
    /// each wanted one set to its end, and each service of the `gone` grants that nothing here
    /// wants any more removed.
    pub fn changes_for(&self, layout: &Layout, address: IpAddr, gone: &[Grant]) -> Changes {
        let mut changes = Changes {
            set: self
                .elements
                .iter()
                .filter(|(k, _)| k.addr == address)
                .map(|(k, end)| (k.clone(), *end))
                .collect(),
            remove: vec![],
        };
        for g in gone.iter().filter(|g| g.address == address) {
            for svc in &g.services {
                let k = allow_key(svc, address);
                if layout.has_service(svc) && !self.elements.contains_key(&k) && !changes.remove.contains(&k)
                {
                    changes.remove.push(k);
                }
            }
        }
        changes
    }
}

impl Desired {
    /// Brings every element of `address` in line with this state (built from its live grants and
    /// ban): each wanted one set, every other service's and the ban's removed.
    pub fn whole_changes_for(&self, layout: &Layout, address: IpAddr) -> Changes {
        let mut changes = Changes::default();
        let keys = layout
            .services
            .iter()
            .map(|(svc, _)| allow_key(svc, address))
            .chain([ban_key(address)]);
        for k in keys {
            match self.elements.get(&k) {
                Some(end) => changes.set.push((k, *end)),
                None => changes.remove.push(k),
            }
        }
        changes
    }
}

/// The desired state of a whole store, gathered per set and made into the map at once: a map
/// insert per element, each building its set's name, cost the read-back of 200,000 elements
/// a third of its time. Ends are taken as given (already held by the [`Clock`]).
pub struct Gather<'l> {
    layout: &'l Layout,
    /// Per set: its name and its (address, end) pairs, in no order.
    sets: Vec<(String, Vec<(IpAddr, UnixMs)>)>,
}

impl<'l> Gather<'l> {
    /// Sets 0 and 1 are the bans (v4, v6); then each service's, v4 and v6, in layout order.
    pub fn new(layout: &'l Layout) -> Gather<'l> {
        let mut sets = vec![
            (ban_set(Family::V4), Vec::new()),
            (ban_set(Family::V6), Vec::new()),
        ];
        for (svc, _) in &layout.services {
            for f in [Family::V4, Family::V6] {
                sets.push((allow_set(svc, f), Vec::new()));
            }
        }
        Gather { layout, sets }
    }

    fn family(address: IpAddr) -> usize {
        usize::from(!address.is_ipv4())
    }

    /// One grant's services until `end`; a service the config has since dropped opens nothing.
    pub fn grant<'s>(&mut self, address: IpAddr, services: impl IntoIterator<Item = &'s str>, end: UnixMs) {
        for svc in services {
            if let Some(i) = self.layout.services.iter().position(|(n, _)| n == svc) {
                self.sets[2 + 2 * i + Self::family(address)]
                    .1
                    .push((address, end));
            }
        }
    }

    /// One ban until `end`.
    pub fn ban(&mut self, address: IpAddr, end: UnixMs) {
        self.sets[Self::family(address)].1.push((address, end));
    }

    /// Each element once, at the latest end asked for it.
    pub fn finish(self) -> Desired {
        let mut all: Vec<(ElemKey, UnixMs)> = Vec::new();
        for (set, mut elems) in self.sets {
            crate::base::pace::breathe();
            elems.sort_unstable();
            // Sorted by address, then end: the last of each address has the latest end.
            let mut elems = elems.into_iter().peekable();
            while let Some((addr, end)) = elems.next() {
                crate::base::pace::breathe();
                if elems.peek().is_some_and(|(next, _)| *next == addr) {
                    continue;
                }
                all.push((
                    ElemKey {
                        set: set.clone(),
                        addr,
                    },
                    end,
                ));
            }
        }
        // Already in key order by set and address: the map is built in one pass.
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Desired {
            elements: all.into_iter().collect(),
        }
    }
}

/// Takes the bans of `addresses` out of the table (unbanned, or ended).
pub fn lift_bans(addresses: impl IntoIterator<Item = IpAddr>) -> Changes {
    Changes {
        set: vec![],
        remove: addresses.into_iter().map(ban_key).collect(),
    }
}

/// Both lists of changes, as one batch.
pub fn merge(mut a: Changes, b: Changes) -> Changes {
    a.set.extend(b.set);
    a.remove.extend(b.remove);
    a
}

fn allow_key(service: &str, address: IpAddr) -> ElemKey {
    ElemKey {
        set: allow_set(service, Family::of(&address)),
        addr: address,
    }
}

/// The ban element of `ip`.
pub fn ban_key(ip: IpAddr) -> ElemKey {
    ElemKey {
        set: ban_set(Family::of(&ip)),
        addr: ip,
    }
}

impl From<Desired> for Elements {
    fn from(d: Desired) -> Elements {
        d.elements
    }
}

impl FromIterator<(ElemKey, UnixMs)> for Desired {
    fn from_iter<I: IntoIterator<Item = (ElemKey, UnixMs)>>(iter: I) -> Desired {
        Desired {
            elements: iter.into_iter().collect::<BTreeMap<_, _>>(),
        }
    }
}
