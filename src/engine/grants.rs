//! Grants: checking what is asked, writing a batch in one transaction, revoking.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use tracing::warn;

use super::command::{Actor, GrantAsk, Granted, Refused, Reply, Revoked, Services};
use super::ports::{Records, Table};
use super::{check_ttl, clean_text, refused, Engine};
use crate::base::addr;
use crate::base::clock::{utc, Now, UnixMs};
use crate::base::duration::human;
use crate::model::{Event, Kind, NewGrant};
use crate::observe::audit;

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
    /// elements in the table in one nft batch.
    pub(super) fn grant_batch(&mut self, asks: Vec<(Actor, GrantAsk, Reply<Granted>)>, now: Now) {
        let mut ok: Vec<(NewGrant, Reply<Granted>)> = Vec::new();
        for (actor, ask, reply) in asks {
            match self.check_grant(&ask, &actor, now.wall) {
                Ok(g) => ok.push((g, reply)),
                Err(e) => {
                    audit::record(
                        Event::new(Kind::GrantRefused, now.wall)
                            .address(ask.address)
                            .who(actor.who.as_str())
                            .source(actor.source)
                            .detail(e.0.clone()),
                    );
                    let _ = reply.send(Err(e));
                }
            }
        }
        if ok.is_empty() {
            return;
        }
        let new: Vec<NewGrant> = ok.iter().map(|(g, _)| g.clone()).collect();
        let written = match self.store.insert_grants(&new, now.wall) {
            Ok(w) => w,
            Err(e) => {
                warn!("store refused {} grant(s): {e}", ok.len());
                for (_, reply) in ok {
                    let _ = reply.send(Err(Refused(format!("not granted: {e}"))));
                }
                return;
            }
        };
        // Durable now. Put every touched address's elements in with its latest end.
        let addrs: BTreeSet<IpAddr> = written.iter().map(|g| g.address).collect();
        let applied = self.refresh_addresses(&addrs, &[], now);
        for (grant, (_, reply)) in written.into_iter().zip(ok) {
            crate::observe::metrics::METRICS.grant(grant.source);
            audit::record(
                Event::new(Kind::Grant, now.wall)
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
            let _ = reply.send(Ok(Granted {
                grant,
                firewall: applied.clone(),
                warning,
            }));
        }
    }

    fn banned_warning(&self, ip: IpAddr, now: UnixMs) -> Option<String> {
        let bans = self.store.live_bans(now).ok()?;
        let b = bans.iter().find(|b| b.address == ip)?;
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
