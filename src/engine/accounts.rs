//! DISA accounts: adding one with a new passcode, resetting it, owner numbers, disabling and
//! removing.

use std::sync::Arc;

use super::command::{AccountAsk, AccountCreated, Actor, Refused};
use super::ports::{Records, Table};
use super::{check_ttl, refused, Engine};
use crate::base::clock::Now;
use crate::base::secret::{self, DisaKey};
use crate::model::{Account, Event, Kind, Source};
use crate::observe::audit;

impl<R: Records, T: Table> Engine<R, T> {
    fn disa_key(&mut self) -> Result<Arc<DisaKey>, Refused> {
        if let Some(k) = &self.disa_key {
            return Ok(k.clone());
        }
        let k = Arc::new(DisaKey::load_or_create(&self.config.disa.key_file).map_err(refused)?);
        self.disa_key = Some(k.clone());
        Ok(k)
    }

    pub(super) fn account_add(
        &mut self,
        ask: AccountAsk,
        actor: &Actor,
        now: Now,
    ) -> Result<AccountCreated, Refused> {
        let AccountAsk {
            name,
            services,
            ttl,
            endpoint,
            address_modes: modes,
            callers,
            keep_several,
        } = ask;
        let endpoint = endpoint.as_deref();
        let name = name.trim();
        if !crate::base::name::is_plain(name) {
            return Err(Refused::new(
                "an account name is 1–64 letters, digits, `.`, `_` or `-`",
            ));
        }
        let services = if services.is_empty() {
            self.config.default_services()
        } else {
            services
        };
        for s in &services {
            if !self.firewall.layout().has_service(s) {
                return Err(Refused(format!("unknown service `{s}`")));
            }
        }
        let ttl = ttl.unwrap_or(self.config.grants.ttl_default);
        check_ttl(ttl, self.config.grants.ttl_max, "grants.ttl-max")?;
        if let Some(ep) = endpoint {
            if ep.is_empty()
                || ep.len() > 80
                || !ep
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c))
            {
                return Err(Refused(format!("`{ep}` is not a PJSIP endpoint name")));
            }
        }
        let modes: Vec<String> = if modes.is_empty() {
            // The phone's own dropped REGISTER first: the address a road warrior rarely knows.
            vec![
                "attempted".into(),
                "source".into(),
                "registered".into(),
                "keyed".into(),
            ]
        } else {
            modes.iter().map(|m| m.trim().to_string()).collect()
        };
        for m in &modes {
            if agi::disa::AddressMode::parse(m).is_none() {
                return Err(Refused(format!(
                    "unknown address mode `{m}`; use attempted, source, registered, keyed"
                )));
            }
        }
        let callers = caller_numbers(&callers)?;
        match self.store.account(name) {
            Ok(Some(_)) => {
                return Err(Refused(format!(
                    "an account named {name} exists; use account reset-passcode"
                )))
            }
            Ok(None) => {}
            Err(e) => return Err(refused(e)),
        }
        let key = self.disa_key()?;
        let account = Account {
            name: name.to_string(),
            services,
            ttl_secs: ttl.0.as_secs(),
            endpoint: endpoint.map(str::to_string),
            address_modes: modes,
            disabled: false,
            created: now.wall,
            passcode_set: now.wall,
            callers,
            passcode_digits: Some(self.config.disa.passcode_digits),
            keep_several,
        };
        // A tag collision (two equal passcodes) is a one-in-10^12 event: draw again.
        for _ in 0..3 {
            let passcode = secret::new_passcode(self.config.disa.passcode_digits).map_err(refused)?;
            if self
                .store
                .add_account(&account, &key.tag(passcode.expose()))
                .is_ok()
            {
                audit::record(
                    Event::new(Kind::Account, now.wall)
                        .who(name)
                        .source(Source::Admin)
                        .detail(format!(
                            "added by {:?}: services={} ttl={ttl} endpoint={} modes={} callers={}{}",
                            actor.who,
                            account.services.join(","),
                            account.endpoint.as_deref().unwrap_or("-"),
                            account.address_modes.join(","),
                            account.callers.join(","),
                            if keep_several { " keep-several" } else { "" }
                        )),
                );
                return Ok(AccountCreated { account, passcode });
            }
        }
        Err(Refused::new("could not store the account"))
    }

    pub(super) fn account_reset(
        &mut self,
        name: &str,
        actor: &Actor,
        now: Now,
    ) -> Result<AccountCreated, Refused> {
        let account = match self.store.account(name) {
            Ok(Some(a)) => a,
            Ok(None) => return Err(Refused(format!("no account named {name}"))),
            Err(e) => return Err(refused(e)),
        };
        let key = self.disa_key()?;
        for _ in 0..3 {
            let passcode = secret::new_passcode(self.config.disa.passcode_digits).map_err(refused)?;
            if let Ok(true) = self.store.set_passcode(
                name,
                &key.tag(passcode.expose()),
                self.config.disa.passcode_digits,
                now.wall,
            ) {
                audit::record(
                    Event::new(Kind::Account, now.wall)
                        .who(name)
                        .source(Source::Admin)
                        .detail(format!("passcode reset by {:?}", actor.who)),
                );
                return Ok(AccountCreated { account, passcode });
            }
        }
        Err(Refused::new("could not store the new passcode"))
    }

    /// Replaces an account's owner numbers; answers them as kept.
    pub(super) fn account_callers(
        &mut self,
        name: &str,
        callers: &[String],
        actor: &Actor,
        now: Now,
    ) -> Result<Vec<String>, Refused> {
        let callers = caller_numbers(callers)?;
        match self.store.set_callers(name, &callers) {
            Ok(true) => {
                audit::record(
                    Event::new(Kind::Account, now.wall)
                        .who(name)
                        .source(Source::Admin)
                        .detail(format!(
                            "owner numbers set by {:?}: {}",
                            actor.who,
                            callers.join(",")
                        )),
                );
                Ok(callers)
            }
            Ok(false) => Err(Refused(format!("no account named {name}"))),
            Err(e) => Err(refused(e)),
        }
    }

    pub(super) fn account_set_disabled(
        &mut self,
        name: &str,
        disabled: bool,
        actor: &Actor,
        now: Now,
    ) -> Result<(), Refused> {
        match self.store.set_disabled(name, disabled) {
            Ok(true) => {
                let verb = if disabled { "disabled" } else { "enabled" };
                audit::record(
                    Event::new(Kind::Account, now.wall)
                        .who(name)
                        .source(Source::Admin)
                        .detail(format!("{verb} by {:?}", actor.who)),
                );
                Ok(())
            }
            Ok(false) => Err(Refused(format!("no account named {name}"))),
            Err(e) => Err(refused(e)),
        }
    }

    pub(super) fn account_remove(&mut self, name: &str, actor: &Actor, now: Now) -> Result<(), Refused> {
        match self.store.remove_account(name) {
            Ok(true) => {
                audit::record(
                    Event::new(Kind::Account, now.wall)
                        .who(name)
                        .source(Source::Admin)
                        .detail(format!("removed by {:?}", actor.who)),
                );
                Ok(())
            }
            Ok(false) => Err(Refused(format!("no account named {name}"))),
            Err(e) => Err(refused(e)),
        }
    }
}

/// Owner numbers as the limits key them; an entry that is not a number is refused.
fn caller_numbers(raw: &[String]) -> Result<Vec<String>, Refused> {
    let mut out: Vec<String> = Vec::new();
    for r in raw.iter().filter(|r| !r.trim().is_empty()) {
        match crate::rules::limiter::normalize_number(r).map_err(Refused)? {
            Some(n) if !out.contains(&n) => out.push(n),
            _ => {}
        }
    }
    if out.len() > 16 {
        return Err(Refused::new("an account lists at most 16 owner numbers"));
    }
    Ok(out)
}
