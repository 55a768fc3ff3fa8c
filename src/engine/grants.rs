//! Grants: checking what is asked, writing a batch in one transaction, revoking.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use tracing::warn;

use super::command::{Actor, GrantAsk, Granted, Refused, Reply, Revoked, Services};
use super::ports::{Records, Table};
use super::{check_ttl, clean_text, refused, Engine};
use crate::base::addr;
use crate::base::clock::{utc, Now, UnixMs};
use crate::base::duration::human;
use crate::base::lock::lock;
use crate::model::{Event, Grant, Kind, NewGrant};
use crate::nft::desired::{merge, Desired};
use crate::nft::Changes;
use crate::observe::audit;
use crate::store::GrantWrite;

impl<R: Records, T: Table> Engine<R, T> {
    /// Checks one grant; the refusal is what the asker sees, and nothing is changed.
    fn check_grant(&self, ask: &GrantAsk, actor: &Actor, now: UnixMs) -> Result<NewGrant, Refused> {
        let ip = addr::check_grantable(ask.address).map_err(refused)?;
        let asked = match &ask.services {
            Services::Default => self.config.default_services(),
            Services::Named(names) => names.clone(),
        };
        let mut svcs: Vec<String> = Vec::new();
        for s in asked {
            if !self.firewall.layout().has_service(&s) {
                let known: Vec<&str> = self
                    .firewall
                    .layout()
                    .services
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect();
                return Err(Refused(format!(
                    "unknown service `{s}`; the config defines: {}",
                    known.join(", ")
                )));
            }
            if !svcs.contains(&s) {
                svcs.push(s);
            }
        }
        let ttl = ask.ttl.unwrap_or(self.config.grants.ttl_default);
        check_ttl(ttl, self.config.grants.ttl_max, "grants.ttl-max")?;
        Ok(NewGrant {
            address: ip,
            services: svcs,
            source: actor.source,
            who: actor.who.clone(),
            note: clean_text(&ask.note),
            expires: now + ttl.0.as_millis() as i64,
        })
    }

    /// Puts every grant that passes its checks in the table in one nft batch, then writes them
    /// in one store transaction; each asker hears once both are done. An owned grant from an
    /// address its holder already has a grant at extends that grant in place; from a new address
    /// it replaces the holder's grants elsewhere (their rows and elements go in the same
    /// transaction and batch) unless the owner keeps several. Asks are taken in order, so within
    /// a batch the later one wins.
    ///
    /// The table goes first so that no element waits on the store's sync to disk (a fraction of
    /// a millisecond, and several when the disk is busy). A write the store refuses is taken
    /// back out of the table at once; should the daemon die between the two, the start's
    /// read-back takes out what the store never got.
    pub(super) fn grant_batch(&mut self, asks: Vec<BatchAsk>, now: Now, opened: impl FnOnce()) {
        let slots = self.shape_batch(asks, now);
        let mut write = GrantWrite::default();
        let mut addrs = BTreeSet::new();
        for s in &slots {
            match (&s.row, s.replaced_by) {
                (Some(row), Some(_)) => write.remove.push(row.id),
                (Some(row), None) if !s.replies.is_empty() => {
                    write
                        .extend
                        .push((row.id, s.grant.expires, s.grant.services.clone()))
                }
                (Some(_), None) => continue,
                (None, _) => write.insert.push(s.grant.clone()),
            }
            addrs.insert(s.grant.address);
        }
        if addrs.is_empty() {
            return;
        }
        let refuse = |slots: Vec<Slot>, e: &crate::store::StoreError| {
            for s in slots {
                for reply in s.replies {
                    let _ = reply.send(Err(grant_failed(e)));
                }
            }
        };
        let (open, back) = match self.preview(&write, &addrs, now) {
            Ok(p) => p,
            Err(e) => {
                warn!(
                    "cannot read the store's grants; {} grant(s) not made: {e}",
                    slots.len()
                );
                return refuse(slots, &e);
            }
        };
        let applied = self.apply(open, now);
        opened();
        let written = match self.store.write_grants(&write, now.wall) {
            Ok(w) => w,
            Err(e) => {
                warn!(
                    "store refused {} grant(s): {e}",
                    write.insert.len() + write.extend.len()
                );
                self.apply(back, now);
                return refuse(slots, &e);
            }
        };
        let (mut inserted, mut extended) = (written.inserted.into_iter(), written.extended.into_iter());
        for s in slots {
            if let (Some(row), Some(by)) = (&s.row, s.replaced_by) {
                crate::observe::metrics::METRICS.grant_replaced();
                audit::record(
                    Event::new(Kind::GrantReplaced, now.wall)
                        .address(row.address)
                        .who(row.who.as_str())
                        .source(row.source)
                        .detail(format!("replaced by {by}")),
                );
                continue;
            }
            if s.replies.is_empty() {
                continue;
            }
            let grant = match &s.row {
                Some(_) => extended.next(),
                None => inserted.next(),
            };
            let Some(grant) = grant else {
                continue;
            };
            let kind = match s.row {
                Some(_) => {
                    crate::observe::metrics::METRICS.grant_extended();
                    Kind::GrantExtended
                }
                None => {
                    crate::observe::metrics::METRICS.grant(grant.source);
                    Kind::Grant
                }
            };
            audit::record(
                Event::new(kind, now.wall)
                    .address(grant.address)
                    .who(grant.who.as_str())
                    .source(grant.source)
                    .detail(format!(
                        "services={} until={} note={:?}",
                        grant.services.join(","),
                        utc(grant.end()),
                        grant.note
                    )),
            );
            let warning = self.banned_warning(grant.address, now.wall);
            for reply in s.replies {
                let _ = reply.send(Ok(Granted {
                    grant: grant.clone(),
                    firewall: applied.clone(),
                    warning: warning.clone(),
                }));
            }
        }
    }

    /// The element changes that bring each of `addrs` to what it has once `write` lands, and
    /// those that bring it back: both from the store's rows before the write. Each takes out
    /// what the other side opened and this one does not.
    fn preview(
        &self,
        write: &GrantWrite,
        addrs: &BTreeSet<IpAddr>,
        now: Now,
    ) -> Result<(Changes, Changes), crate::store::StoreError> {
        let layout = self.firewall.layout();
        let mut clock = lock(&self.clock);
        let (mut open, mut back) = (Changes::default(), Changes::default());
        for &ip in addrs {
            let before = self.store.grants_for(ip, now.wall)?;
            let after = write.applied_to(ip, &before, now.wall);
            let want = Desired::build(layout, &after, &[], &mut clock, now);
            open = merge(open, want.changes_for(layout, ip, &before));
            let had = Desired::build(layout, &before, &[], &mut clock, now);
            back = merge(back, had.changes_for(layout, ip, &after));
        }
        Ok((open, back))
    }

    /// Refuses what fails its checks and sorts the rest into slots: each owned ask finds its
    /// holder's live grants, extends the one at its address or adds a new one, and (unless the
    /// owner keeps several) marks the holder's others replaced. Later asks see earlier ones.
    fn shape_batch(&mut self, asks: Vec<BatchAsk>, now: Now) -> Vec<Slot> {
        let mut slots: Vec<Slot> = Vec::new();
        // Each holder whose live grants are loaded into `slots`, with the indices of its slots:
        // an ask looks only at its own holder's, not at every slot of a 500-call burst.
        let mut held: HashMap<String, Vec<usize>> = HashMap::new();
        for (actor, ask, beside, reply) in asks {
            let checked = self.check_grant(&ask, &actor, now.wall).and_then(|g| {
                let Some(owner) = &ask.owner else {
                    return Ok((g, None));
                };
                let who = owner.holder.who();
                if !held.contains_key(&who) {
                    let live = self
                        .store
                        .grants_of(&who, owner.holder.source(), now.wall)
                        .map_err(|e| grant_failed(&e))?;
                    let first = slots.len();
                    slots.extend(live.into_iter().map(Slot::existing));
                    held.insert(who.clone(), (first..slots.len()).collect());
                }
                // The holder's grants are found by these two, so they come from the holder.
                let g = NewGrant {
                    who: who.clone(),
                    source: owner.holder.source(),
                    ..g
                };
                Ok((g, Some((who, owner.replace))))
            });
            let (g, owner) = match checked {
                Ok(c) => c,
                Err(e) => {
                    audit::record(
                        Event::new(Kind::GrantRefused, now.wall)
                            .address(ask.address)
                            .who(actor.who.as_str())
                            .source(actor.source)
                            .detail(e.0.clone()),
                    );
                    let _ = reply.send(Err(e));
                    continue;
                }
            };
            let Some((who, replace)) = owner else {
                slots.push(Slot::new(g, reply));
                continue;
            };
            let address = g.address;
            let mine = held.get_mut(&who).expect("loaded above");
            match mine
                .iter()
                .find(|&&k| slots[k].standing() && slots[k].grant.address == address)
            {
                Some(&k) => slots[k].extend(g, reply),
                None => {
                    mine.push(slots.len());
                    slots.push(Slot::new(g, reply));
                }
            }
            if replace {
                for &k in mine.iter() {
                    let s = &mut slots[k];
                    if s.standing() && s.grant.address != address && Some(s.grant.address) != beside {
                        s.replaced_by = Some(address);
                    }
                }
            }
        }
        // Asks answered by a grant that a later ask in this batch replaced are refused, and a
        // grant asked for and replaced within the batch is never written.
        slots.retain_mut(|s| {
            let Some(by) = s.replaced_by else {
                return true;
            };
            let why = format!(
                "replaced at once by a grant for {} from {by} in the same batch",
                s.grant.who
            );
            for reply in s.replies.drain(..) {
                let _ = reply.send(Err(Refused(why.clone())));
            }
            s.row.is_some()
        });
        slots
    }

    fn banned_warning(&self, ip: IpAddr, now: UnixMs) -> Option<String> {
        let b = self.store.ban_of(ip).ok()??;
        if b.expires <= now {
            return None;
        }
        Some(format!(
            "{ip} is banned for another {}; the ban wins until it ends (passknock unban {ip})",
            human(Duration::from_millis((b.expires - now).max(0) as u64))
        ))
    }

    /// Removes every grant of `ip`, and their elements from the table.
    pub(super) fn revoke(&mut self, ip: IpAddr, actor: &Actor, now: Now) -> Result<Revoked, Refused> {
        let removed = self
            .store
            .revoke(ip)
            .map_err(|e| Refused(format!("not revoked: {e}")))?;
        if removed.is_empty() {
            return Err(Refused(format!("{ip} has no grant")));
        }
        let applied = self.refresh_addresses(&BTreeSet::from([ip]), &removed, now);
        audit::record(
            Event::new(Kind::Revoke, now.wall)
                .address(ip)
                .who(actor.who.as_str())
                .source(actor.source)
                .detail(format!("grants={}", removed.len())),
        );
        Ok(Revoked {
            address: ip,
            grants: removed.len(),
            firewall: applied,
        })
    }
}

/// A grant asked for: who asks, what, the address its replacing spares (the other half of a
/// dual-stack knock), and where the answer goes.
pub(super) type BatchAsk = (Actor, GrantAsk, Option<IpAddr>, Reply<Granted>);

/// One grant as a batch of asks shapes it: a row the store has (an owner's live grant) or one to
/// insert, the asks it answers, and whether a grant from another address replaces it.
struct Slot {
    /// What the grant is to be: for a stored row, its services and the latest expiry asked.
    grant: NewGrant,
    /// The stored row, as it was before this batch.
    row: Option<Grant>,
    replies: Vec<Reply<Granted>>,
    /// The address whose new grant ends this one.
    replaced_by: Option<IpAddr>,
}

impl Slot {
    fn new(grant: NewGrant, reply: Reply<Granted>) -> Slot {
        Slot {
            grant,
            row: None,
            replies: vec![reply],
            replaced_by: None,
        }
    }

    fn existing(row: Grant) -> Slot {
        Slot {
            grant: NewGrant {
                address: row.address,
                services: row.services.clone(),
                source: row.source,
                who: row.who.clone(),
                note: row.note.clone(),
                expires: row.expires,
            },
            row: Some(row),
            replies: Vec::new(),
            replaced_by: None,
        }
    }

    /// Whether nothing replaced this grant.
    fn standing(&self) -> bool {
        self.replaced_by.is_none()
    }

    /// Another ask from the same address: the grant lasts to the later end and opens what the
    /// latest ask opens.
    fn extend(&mut self, ask: NewGrant, reply: Reply<Granted>) {
        self.grant.expires = self.grant.expires.max(ask.expires);
        self.grant.services = ask.services;
        self.replies.push(reply);
    }
}

/// A grant the store did not take, as the asker hears it: "not granted" only when that is so; a
/// write cut off mid-way may have taken, and the asker is told it is not known.
pub(super) fn grant_failed(e: &crate::store::StoreError) -> Refused {
    match e {
        crate::store::StoreError::PgInDoubt { .. } => Refused(format!("grant outcome unknown: {e}")),
        _ => Refused(format!("not granted: {e}")),
    }
}
