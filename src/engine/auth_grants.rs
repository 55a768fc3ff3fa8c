//! Grants earned by a successful SIP login: the ban wins, and a phone re-authenticating while
//! its grant there is still fresh changes nothing — looked up by address, never a scan.

use std::time::Duration;

use super::command::{Actor, GrantAsk, Refused, Services};
use super::ports::{Records, Table};
use super::Engine;
use crate::base::clock::UnixMs;
use crate::base::duration::human;
use crate::model::{Event, Grant, Kind};
use crate::observe::audit;

impl<R: Records, T: Table> Engine<R, T> {
    /// What a login-earned grant needs before the grant path: refused while the address is
    /// banned; `Some(grant)` when the holder's grant at the address has more than half its TTL
    /// left (nothing is to be written); `None` when the grant path is to grant or extend it.
    /// Two indexed reads (the ban by address, the grants of that address), no write.
    pub(super) fn auth_precheck(
        &self,
        ask: &GrantAsk,
        actor: &Actor,
        now: UnixMs,
    ) -> Result<Option<Grant>, Refused> {
        let ip = ask.address;
        let ban = self
            .store
            .ban_of(ip)
            .map_err(|e| super::grants::grant_failed(&e))?;
        if let Some(b) = ban.filter(|b| b.expires > now) {
            let why = format!(
                "{ip} is banned for another {} ({}); the ban wins, no grant",
                human(Duration::from_millis((b.expires - now).max(0) as u64)),
                b.reason
            );
            audit::record(
                Event::new(Kind::GrantRefused, now)
                    .address(ip)
                    .who(actor.who.as_str())
                    .source(actor.source)
                    .detail(why.clone()),
            );
            return Err(Refused(why));
        }
        let Some(owner) = &ask.owner else {
            return Ok(None);
        };
        let ttl = ask.ttl.unwrap_or(self.config.grants.ttl_default);
        let half = (ttl.0.as_millis() / 2) as i64;
        let who = owner.holder.who();
        let source = owner.holder.source();
        // A grant opening other services than asked (the config changed) is written again.
        let mut asked = match &ask.services {
            Services::Default => self.config.default_services(),
            Services::Named(names) => names.clone(),
        };
        asked.sort();
        asked.dedup();
        let fresh = self
            .store
            .grants_for(ip, now)
            .map_err(|e| super::grants::grant_failed(&e))?
            .into_iter()
            .find(|g| {
                let mut opens = g.services.clone();
                opens.sort();
                g.who == who && g.source == source && g.expires - now > half && opens == asked
            });
        Ok(fresh)
    }
}
