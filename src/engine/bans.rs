//! Bans: an address kept off every protected port until its ban ends, and lifted on request.

use std::net::IpAddr;

use super::command::{Actor, BanAsk, Banned, Refused, Unbanned};
use super::ports::{Records, Table};
use super::{check_ttl, clean_text, refused, Engine};
use crate::base::addr;
use crate::base::clock::{utc, Now};
use crate::model::{Event, Kind};
use crate::nft::{self, Desired};
use crate::observe::audit;

impl<R: Records, T: Table> Engine<R, T> {
    /// Sets or replaces `ask.address`'s ban. Trusted addresses are never banned.
    pub(super) fn ban(&mut self, ask: BanAsk, actor: &Actor, now: Now) -> Result<Banned, Refused> {
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
        let ban = self
            .store
            .ban(ip, &reason, now.wall + ttl.0.as_millis() as i64, now.wall)
            .map_err(|e| Refused(format!("not banned: {e}")))?;
        let wanted = Desired::build(
            self.firewall.layout(),
            [],
            std::slice::from_ref(&ban),
            &mut self.clock,
            now,
        );
        let applied = self.apply(wanted.into_changes(), now);
        audit::record(
            Event::new(Kind::Ban, now.wall)
                .address(ip)
                .who(actor.who.as_str())
                .source(actor.source)
                .detail(format!("until={} reason={reason:?}", utc(ban.expires))),
        );
        crate::observe::metrics::METRICS.ban();
        Ok(Banned {
            ban,
            firewall: applied,
        })
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
