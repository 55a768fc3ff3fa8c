//! Bans: an address kept off every protected port until its ban ends, and lifted on request.

use std::net::IpAddr;

use super::command::{Actor, BanAsk, Banned, Refused, Reply, Unbanned};
use super::ports::{Records, Table};
use super::{check_ttl, clean_text, refused, Engine};
use crate::base::addr;
use crate::base::clock::{utc, Now, UnixMs};
use crate::base::lock::lock;
use crate::model::{Ban, Event, Kind, Source};
use crate::nft::{self, Desired};
use crate::observe::audit;
use tracing::warn;

impl<R: Records, T: Table> Engine<R, T> {
    /// Checks one ban; the refusal is what the asker sees, and nothing is changed. Trusted
    /// addresses are never banned.
    fn check_ban(&self, ask: &BanAsk, actor: &Actor, now: Now) -> Result<(IpAddr, String, UnixMs), Refused> {
        let ip = addr::check_grantable(ask.address).map_err(refused)?;
        if let Some(net) = self.config.firewall.trusted.iter().find(|n| n.contains(ip)) {
            return Err(Refused(format!(
                "{ip} is trusted (firewall.trusted has {net}); trusted addresses are never banned"
            )));
        }
        let ttl = ask.ttl.unwrap_or(self.config.bans.ttl_default);
        check_ttl(ttl, self.config.bans.ttl_max, "bans.ttl-max")?;
        let reason = if ask.reason.trim().is_empty() {
            format!("banned by {}", actor.who)
        } else {
            clean_text(&ask.reason)
        };
        Ok((ip, reason, now.wall + ttl.0.as_millis() as i64))
    }

    /// Sets or replaces every ban asked in one store transaction and one batch to the kernel: a
    /// flood of offenders from AMI costs one fsync, not one each.
    pub(super) fn ban_batch(&mut self, asks: Vec<(Actor, BanAsk, Reply<Banned>)>, now: Now) {
        let mut rows = Vec::new();
        let mut waiting = Vec::new();
        for (actor, ask, reply) in asks {
            match self.check_ban(&ask, &actor, now) {
                Ok(row) => {
                    rows.push(row);
                    waiting.push((actor, reply));
                }
                Err(e) => drop(reply.send(Err(e))),
            }
        }
        if rows.is_empty() {
            return;
        }
        let bans = match self.store.ban_many(&rows, now.wall) {
            Ok(b) => b,
            // With a shared store away, a listener's ban is still enforced here: an attack does
            // not wait for the database. It is written up when the store is back.
            Err(e) if self.store.shared() && waiting.iter().all(|(a, _)| a.source == Source::Ami) => {
                warn!(
                    "the shared store did not take {} ban(s), enforced here until it is back: {e}",
                    rows.len()
                );
                let bans: Vec<Ban> = rows
                    .into_iter()
                    .map(|(address, reason, expires)| Ban {
                        address,
                        reason,
                        created: now.wall,
                        expires,
                    })
                    .collect();
                self.hold_back_bans(&bans);
                bans
            }
            Err(e) => {
                for (_, reply) in waiting {
                    let _ = reply.send(Err(Refused(format!("not banned: {e}"))));
                }
                return;
            }
        };
        let wanted = Desired::build(self.firewall.layout(), [], &bans, &mut lock(&self.clock), now);
        let applied = self.apply(wanted.into_changes(), now);
        for (ban, (actor, reply)) in bans.into_iter().zip(waiting) {
            audit::record(
                Event::new(Kind::Ban, now.wall)
                    .address(ban.address)
                    .who(actor.who.as_str())
                    .source(actor.source)
                    .detail(format!("until={} reason={:?}", utc(ban.expires), ban.reason)),
            );
            crate::observe::metrics::METRICS.ban();
            let _ = reply.send(Ok(Banned {
                ban,
                firewall: applied.clone(),
            }));
        }
    }

    pub(super) fn unban(&mut self, ip: IpAddr, actor: &Actor, now: Now) -> Result<Unbanned, Refused> {
        match self.store.unban(ip) {
            Ok(Some(_)) => {}
            Ok(None) => return Err(Refused(format!("{ip} is not banned"))),
            Err(e) => return Err(Refused(format!("not unbanned: {e}"))),
        }
        let applied = self.apply(nft::lift_bans([ip]), now);
        audit::record(
            Event::new(Kind::Unban, now.wall)
                .address(ip)
                .who(actor.who.as_str())
                .source(actor.source),
        );
        Ok(Unbanned {
            address: ip,
            firewall: applied,
        })
    }
}
