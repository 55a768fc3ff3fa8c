//! The engine's handle: how every part of the daemon asks the one writer for something, one typed
//! method per command.

use std::net::IpAddr;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};

use tokio::sync::oneshot;

use super::command::*;
use crate::base::clock::UnixMs;
use crate::config::Config;
use crate::model::Account;

/// How every part of the daemon (control socket, reload, FastAGI, knock listener, AMI) asks the
/// engine for something. Cheap to clone; the engine stops once every handle is dropped.
#[derive(Clone)]
pub struct EngineHandle {
    tx: SyncSender<Job>,
}

/// How long a listener's ban waits for room in a full queue.
const ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The engine's end of the queue, handed to [`Engine::run`](super::Engine::run).
pub struct Inbox(pub(crate) Receiver<Job>);

/// A queue of at most `capacity` pending commands: past it, callers are told the engine is busy.
pub fn channel(capacity: usize) -> (EngineHandle, Inbox) {
    let (tx, rx) = sync_channel(capacity);
    (EngineHandle { tx }, Inbox(rx))
}

impl EngineHandle {
    /// Sends one command and waits for its answer. A full queue is refused at once, not waited on.
    async fn ask<T>(&self, actor: &Actor, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, Refused> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            actor: actor.clone(),
            command: command(reply),
            arrived: std::time::Instant::now(),
        };
        crate::base::pace::urgent(true);
        match self.tx.try_send(job) {
            Ok(()) => rx
                .await
                .unwrap_or_else(|_| Err(Refused::new("the daemon is stopping"))),
            Err(TrySendError::Full(_)) => Err(Refused::new("the daemon is busy; try again")),
            Err(TrySendError::Disconnected(_)) => Err(Refused::new("the daemon is stopping")),
        }
    }

    pub async fn grant(&self, actor: &Actor, ask: GrantAsk) -> Result<Granted, Refused> {
        self.ask(actor, |r| Command::Grant(ask, r)).await
    }

    /// [`grant`](Self::grant), sparing the holder's grant at `beside` from replacement: for
    /// the two addresses of one dual-stack knock.
    pub async fn grant_beside(
        &self,
        actor: &Actor,
        ask: GrantAsk,
        beside: IpAddr,
    ) -> Result<Granted, Refused> {
        self.ask(actor, |r| Command::GrantBeside(ask, beside, r)).await
    }

    /// A grant a successful SIP login earned (`[sip-auth-grant]`): see [`AuthGranted`].
    pub async fn grant_on_auth(&self, actor: &Actor, ask: GrantAsk) -> Result<AuthGranted, Refused> {
        self.ask(actor, |r| Command::GrantOnAuth(ask, r)).await
    }

    pub async fn revoke(&self, actor: &Actor, address: IpAddr) -> Result<Revoked, Refused> {
        self.ask(actor, |r| Command::Revoke(address, r)).await
    }

    pub async fn ban(&self, actor: &Actor, ask: BanAsk) -> Result<Banned, Refused> {
        self.ask(actor, |r| Command::Ban(ask, r)).await
    }

    /// [`ban`](Self::ban) for an offender seen by a listener: a full queue is waited on (up to
    /// [`ROOM_WAIT`]) rather than refused, so a flood of offenders is banned, not dropped.
    pub async fn ban_when_room(&self, actor: &Actor, ask: BanAsk) -> Result<Banned, Refused> {
        let (reply, rx) = oneshot::channel();
        let mut job = Job {
            actor: actor.clone(),
            command: Command::Ban(ask, reply),
            arrived: std::time::Instant::now(),
        };
        let deadline = tokio::time::Instant::now() + ROOM_WAIT;
        loop {
            crate::base::pace::urgent(true);
            match self.tx.try_send(job) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if tokio::time::Instant::now() < deadline => {
                    job = back;
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Err(TrySendError::Full(_)) => return Err(Refused::new("the daemon is busy; try again")),
                Err(TrySendError::Disconnected(_)) => return Err(Refused::new("the daemon is stopping")),
            }
        }
        rx.await
            .unwrap_or_else(|_| Err(Refused::new("the daemon is stopping")))
    }

    pub async fn unban(&self, actor: &Actor, address: IpAddr) -> Result<Unbanned, Refused> {
        self.ask(actor, |r| Command::Unban(address, r)).await
    }

    /// A call is up from `address`: its grants stay open until at least `until`.
    pub async fn hold(&self, actor: &Actor, address: IpAddr, until: UnixMs) -> Result<Held, Refused> {
        self.ask(actor, |r| Command::Hold(address, until, r)).await
    }

    /// `address`'s calls ended: its grants end at their own expiry again.
    pub async fn release(&self, actor: &Actor, address: IpAddr) -> Result<Held, Refused> {
        self.ask(actor, |r| Command::Release(address, r)).await
    }

    pub async fn list(&self, actor: &Actor, limit: Option<usize>) -> Result<Listing, Refused> {
        self.ask(actor, |r| Command::List(limit, r)).await
    }

    pub async fn status(&self, actor: &Actor) -> Result<TableStatus, Refused> {
        self.ask(actor, Command::Status).await
    }

    /// Hands the engine a config the daemon has loaded and checked; the table is rebuilt to match.
    pub async fn reload(&self, actor: &Actor, config: Config) -> Result<Reloaded, Refused> {
        self.ask(actor, |r| Command::Reload(Box::new(config), r)).await
    }

    pub async fn account_add(&self, actor: &Actor, ask: AccountAsk) -> Result<AccountCreated, Refused> {
        self.ask(actor, |r| Command::AccountAdd(ask, r)).await
    }

    pub async fn accounts(&self, actor: &Actor) -> Result<Vec<Account>, Refused> {
        self.ask(actor, Command::AccountList).await
    }

    /// Replaces an account's owner numbers; answers them as kept (normalized, each once).
    pub async fn account_callers(
        &self,
        actor: &Actor,
        name: String,
        callers: Vec<String>,
    ) -> Result<Vec<String>, Refused> {
        self.ask(actor, |r| Command::AccountCallers(name, callers, r))
            .await
    }

    pub async fn account_reset_passcode(
        &self,
        actor: &Actor,
        name: String,
    ) -> Result<AccountCreated, Refused> {
        self.ask(actor, |r| Command::AccountResetPasscode(name, r)).await
    }

    pub async fn account_set_disabled(
        &self,
        actor: &Actor,
        name: String,
        disabled: bool,
    ) -> Result<(), Refused> {
        self.ask(actor, |r| Command::AccountSetDisabled(name, disabled, r))
            .await
    }

    pub async fn account_remove(&self, actor: &Actor, name: String) -> Result<(), Refused> {
        self.ask(actor, |r| Command::AccountRemove(name, r)).await
    }

    pub async fn standing_add(&self, actor: &Actor, ask: StandingAsk) -> Result<StandingChanged, Refused> {
        self.ask(actor, |r| Command::StandingAdd(ask, r)).await
    }

    pub async fn standing_list(&self, actor: &Actor) -> Result<StandingListing, Refused> {
        self.ask(actor, Command::StandingList).await
    }

    pub async fn standing_remove(&self, actor: &Actor, name: String) -> Result<StandingChanged, Refused> {
        self.ask(actor, |r| Command::StandingRemove(name, r)).await
    }

    /// Tells the engine another node changed `addresses` in the shared store (`None`: anything
    /// may have): it reads them again and puts its table in line. From a plain thread: waits for
    /// room rather than drop a change. False once the engine has stopped.
    pub fn remote_change(&self, addresses: Option<Vec<IpAddr>>) -> bool {
        let job = Job {
            actor: Actor::new("shared store", crate::model::Source::Admin),
            command: Command::Remote(addresses),
            arrived: std::time::Instant::now(),
        };
        crate::base::pace::urgent(true);
        self.tx.send(job).is_ok()
    }

    /// Hands the engine the resolver's answers.
    pub async fn resolved(&self, actor: &Actor, answers: Vec<Answer>) -> Result<(), Refused> {
        self.ask(actor, |r| Command::Resolved(answers, r)).await
    }
}
