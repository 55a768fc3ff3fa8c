//! Standing entries: adding, listing and removing them, the resolver's answers for their DNS
//! names, and putting their networks in the table.

use std::collections::BTreeSet;
use std::net::IpAddr;

use tracing::{debug, warn};

use super::command::{Actor, Answer, Refused, StandingAsk, StandingChanged, StandingListing, TableChange};
use super::ports::{Records, Table};
use super::{clean_text, refused, Engine};
use crate::base::addr::{self, Net};
use crate::base::clock::Now;
use crate::model::{Event, Kind, NameState, Source, StandingEntry, Target};
use crate::nft::standing_nets;
use crate::observe::audit;

/// Most targets one entry may hold.
const TARGETS_MAX: usize = 64;

impl<R: Records, T: Table> Engine<R, T> {
    pub(super) fn standing_add(
        &mut self,
        ask: StandingAsk,
        actor: &Actor,
        now: Now,
    ) -> Result<StandingChanged, Refused> {
        let name = ask.name.trim();
        if !crate::base::name::is_plain(name) {
            return Err(Refused::new(
                "a standing entry's name is 1–64 letters, digits, `.`, `_` or `-`",
            ));
        }
        if name == "list" || name == "remove" {
            return Err(Refused(format!(
                "`{name}` is a word of `passknock allow`; name the entry otherwise"
            )));
        }
        if ask.targets.is_empty() {
            return Err(Refused::new(
                "a standing entry needs at least one address, network or DNS name",
            ));
        }
        if ask.targets.len() > TARGETS_MAX {
            return Err(Refused(format!(
                "a standing entry holds at most {TARGETS_MAX} addresses, networks or names"
            )));
        }
        let mut targets: Vec<Target> = Vec::new();
        for t in &ask.targets {
            let t: Target = t.parse().map_err(Refused)?;
            if let Target::Net(n) = &t {
                self.check_standing_net(n)?;
            }
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
        let mut services: Vec<String> = Vec::new();
        let asked = if ask.services.is_empty() {
            self.config.default_services()
        } else {
            ask.services
        };
        for s in asked {
            let s = s.trim().to_string();
            if !self.firewall.layout().has_service(&s) {
                return Err(Refused(format!("unknown service `{s}`")));
            }
            if !services.contains(&s) {
                services.push(s);
            }
        }
        let entry = StandingEntry {
            name: name.to_string(),
            targets,
            services,
            note: clean_text(&ask.note),
            who: actor.who.clone(),
            created: now.wall,
        };
        if !self.store.add_standing(&entry).map_err(refused)? {
            return Err(Refused(format!(
                "a standing entry named {name} exists; remove it first (passknock allow remove {name})"
            )));
        }
        audit::record(
            Event::new(Kind::Standing, now.wall)
                .who(name)
                .source(Source::Admin)
                .detail(format!(
                    "added by {:?}: {} services={}{}",
                    actor.who,
                    targets_text(&entry.targets),
                    entry.services.join(","),
                    note_text(&entry.note)
                )),
        );
        let firewall = self.refresh_standing(now);
        Ok(StandingChanged { entry, firewall })
    }

    /// A network the admin typed: no wider than the configured bound, and one that can be
    /// granted at all. A private network is the admin's to allow (a LAN, a VPN).
    fn check_standing_net(&self, n: &Net) -> Result<(), Refused> {
        let (max, key) = if n.addr.is_ipv4() {
            (self.config.standing.max_prefix_v4, "standing.max-prefix-v4")
        } else {
            (self.config.standing.max_prefix_v6, "standing.max-prefix-v6")
        };
        if n.prefix < max {
            return Err(Refused(format!(
                "{n} is wider than /{max} ({key}); list narrower networks, or raise {key}"
            )));
        }
        addr::check_grantable(n.addr).map_err(refused)?;
        Ok(())
    }

    pub(super) fn standing_list(&self, now: Now) -> Result<StandingListing, Refused> {
        let (entries, names) = self.store.standing().map_err(refused)?;
        Ok(StandingListing {
            now: now.wall,
            entries,
            names,
            followed: self.followed_names(),
        })
    }

    pub(super) fn standing_remove(
        &mut self,
        name: &str,
        actor: &Actor,
        now: Now,
    ) -> Result<StandingChanged, Refused> {
        let Some(entry) = self.store.remove_standing(name).map_err(refused)? else {
            return Err(Refused(format!("no standing entry named {name}")));
        };
        let keep = self.followed_names();
        if let Err(e) = self.store.forget_names(&keep) {
            warn!("cannot forget the names no entry holds: {e}");
        }
        audit::record(
            Event::new(Kind::Standing, now.wall)
                .who(name)
                .source(Source::Admin)
                .detail(format!(
                    "removed by {:?}: {} services={}",
                    actor.who,
                    targets_text(&entry.targets),
                    entry.services.join(",")
                )),
        );
        let firewall = self.refresh_standing(now);
        Ok(StandingChanged { entry, firewall })
    }

    /// Every DNS name a standing entry or `firewall.trusted` holds.
    fn followed_names(&self) -> Vec<String> {
        let mut out: BTreeSet<String> = self.config.firewall.trusted_names.iter().cloned().collect();
        if let Ok((entries, _)) = self.store.standing() {
            for e in &entries {
                out.extend(e.targets.iter().filter_map(|t| t.name()).map(str::to_string));
            }
        }
        out.into_iter().collect()
    }

    /// Takes the resolver's answers: a changed name's addresses change (at most once per half
    /// resolve period), a name that fails keeps its addresses for `standing.grace`, and an answer's
    /// private or unusable addresses are refused. Then the table follows.
    pub(super) fn resolved(&mut self, answers: Vec<Answer>, now: Now) -> Result<(), Refused> {
        let followed = self.followed_names();
        let (_, names) = self.store.standing().map_err(refused)?;
        let mut changed = false;
        for a in answers {
            if !followed.contains(&a.name) {
                continue;
            }
            let mut state = names
                .iter()
                .find(|n| n.name == a.name)
                .cloned()
                .unwrap_or_else(|| NameState {
                    name: a.name.clone(),
                    ..Default::default()
                });
            changed |= self.take_answer(&mut state, a.result, now);
            self.store.put_name(&state).map_err(refused)?;
        }
        if changed {
            let _ = self.refresh_standing(now);
        }
        Ok(())
    }

    /// One name's answer into its state; true when its addresses changed.
    fn take_answer(&self, state: &mut NameState, result: Result<Vec<IpAddr>, String>, now: Now) -> bool {
        let cfg = &self.config.standing;
        state.checked = Some(now.wall);
        let mut refused_text = Vec::new();
        let usable = result.map(|addrs| {
            let mut ok: Vec<IpAddr> = Vec::new();
            for ip in addrs.into_iter().map(addr::normalize) {
                match addr::answer_unusable(ip) {
                    Some(why) if !cfg.private_ok.iter().any(|n| n.contains(ip)) => {
                        refused_text.push(format!("{ip} ({why})"));
                    }
                    _ => ok.push(ip),
                }
            }
            ok.sort();
            ok.dedup();
            ok
        });
        if !refused_text.is_empty() {
            warn!(
                "name {} answered with addresses a standing entry may not hold, refused: {}; \
                 standing.private-ok may list a private network it may use",
                state.name,
                refused_text.join(", ")
            );
        }
        let usable = match usable {
            Ok(v) if v.is_empty() && !refused_text.is_empty() => {
                Err(format!("only refused addresses: {}", refused_text.join(", ")))
            }
            Ok(v) if v.is_empty() => Err("no A or AAAA records".to_string()),
            other => other,
        };
        match usable {
            Ok(addrs) => {
                state.resolved = Some(now.wall);
                state.failing_since = None;
                state.error =
                    (!refused_text.is_empty()).then(|| format!("refused {}", refused_text.join(", ")));
                if addrs == state.addresses {
                    return false;
                }
                let damp = cfg.resolve_every.0.as_millis() as i64 / 2;
                if let Some(c) = state.changed.filter(|_| !state.addresses.is_empty()) {
                    if now.wall - c < damp {
                        debug!(
                            "name {} changed again within half a period; kept as it was",
                            state.name
                        );
                        return false;
                    }
                }
                audit::record(
                    Event::new(Kind::NameChanged, now.wall)
                        .who(state.name.as_str())
                        .detail(format!(
                            "addresses={} was={}",
                            list(&addrs),
                            list(&state.addresses)
                        )),
                );
                state.addresses = addrs;
                state.changed = Some(now.wall);
                true
            }
            Err(e) => {
                let since = *state.failing_since.get_or_insert(now.wall);
                if state.error.as_deref() != Some(e.as_str()) {
                    warn!(
                        "name {} does not resolve ({e}); its last addresses ({}) stay for up to {}",
                        state.name,
                        list(&state.addresses),
                        cfg.grace
                    );
                }
                state.error = Some(e);
                let grace = cfg.grace.0.as_millis() as i64;
                if now.wall - since >= grace && !state.addresses.is_empty() {
                    audit::record(
                        Event::new(Kind::NameChanged, now.wall)
                            .who(state.name.as_str())
                            .detail(format!(
                                "addresses=- was={} (not resolved for {})",
                                list(&state.addresses),
                                cfg.grace
                            )),
                    );
                    state.addresses.clear();
                    state.changed = Some(now.wall);
                    return true;
                }
                false
            }
        }
    }

    /// Puts every standing entry's networks in the table, as the store has them now.
    pub(super) fn refresh_standing(&mut self, now: Now) -> TableChange {
        let nets = match self.store.standing() {
            Ok((entries, names)) => standing_nets(self.firewall.layout(), &entries, &names),
            Err(e) => return self.note_firewall(Err(e.to_string()), now),
        };
        let r = self.firewall.put_standing(nets).map_err(|e| e.to_string());
        self.note_firewall(r, now)
    }
}

fn targets_text(targets: &[Target]) -> String {
    format!(
        "targets={}",
        targets
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

fn note_text(note: &str) -> String {
    if note.is_empty() {
        String::new()
    } else {
        format!(" note={note:?}")
    }
}

fn list(addrs: &[IpAddr]) -> String {
    if addrs.is_empty() {
        return "-".into();
    }
    addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")
}
