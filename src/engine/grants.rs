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
use crate::model::{Event, Grant, Kind, NewGrant};
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

    /// Writes every grant that passes its checks in one store transaction, then puts their
    /// elements in the table in one nft batch. An owned grant from an address its holder already
    /// has a grant at extends that grant in place; from a new address it replaces the holder's
    /// grants elsewhere (their rows and elements go in the same transaction and batch) unless
    /// the owner keeps several. Asks are taken in order, so within a batch the later one wins.
    pub(super) fn grant_batch(&mut self, asks: Vec<BatchAsk>, now: Now) {
        let slots = self.shape_batch(asks, now);
        let mut write = GrantWrite::default();
        for s in &slots {
            match (&s.row, s.replaced_by) {
                (Some(row), Some(_)) => write.remove.push(row.id),
                (Some(row), None) if !s.replies.is_empty() => {
                    write
                        .extend
                        .push((row.id, s.grant.expires, s.grant.services.clone()))
                }
                (Some(_), None) => {}
                (None, _) => write.insert.push(s.grant.clone()),
            }
        }
        if write.remove.is_empty() && write.extend.is_empty() && write.insert.is_empty() {
            return;
        }
        let written = match self.store.write_grants(&write, now.wall) {
            Ok(w) => w,
            Err(e) => {
                warn!(
                    "store refused {} grant(s): {e}",
                    write.insert.len() + write.extend.len()
                );
                for s in slots {
                    for reply in s.replies {
                        let _ = reply.send(Err(grant_failed(&e)));
                    }
                }
                return;
            }
        };
        // Durable now. Put every touched address's elements in with its latest end; take out
        // what the replaced grants opened, and what an extension no longer opens.
        let mut gone: Vec<Grant> = written.removed.clone();
        gone.extend(
            slots
                .iter()
                .filter_map(|s| s.row.clone().filter(|_| !s.replies.is_empty())),
        );
        let addrs: BTreeSet<IpAddr> = gone
            .iter()
            .chain(&written.inserted)
            .chain(&written.extended)
            .map(|g| g.address)
            .collect();
        let applied = self.refresh_addresses(&addrs, &gone, now);
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
