//! The DISA call flow: passcode, then which address, then the grant — over one AGI session.
//!
//! Policy (accounts, lockouts, bans, what may be granted) is the daemon's, behind [`Backend`];
//! this module only talks to the caller. A wrong passcode, a locked-out caller and a suspended
//! system all sound the same.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ami_listener::addr::{host_port, uri_host};
use tokio::io::{AsyncRead, AsyncWrite};
use zeroize::Zeroize;

use crate::session::{Session, SessionError};

mod settings;
pub use settings::{CallFlowSettings, Prompts};

/// Digits a caller keyed as a passcode. Never printed: `Debug` hides it, and it is wiped on drop.
pub struct Passcode(String);

impl Passcode {
    pub fn new(digits: String) -> Passcode {
        Passcode(digits)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Passcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passcode(hidden)")
    }
}

impl Drop for Passcode {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Where the granted address comes from, tried in the account's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressMode {
    /// The SIP source address of this call.
    Source,
    /// The address the account's endpoint is registered from.
    Registered,
    /// An IPv4 address the caller keys in, `*` for dots.
    Keyed,
    /// The one address the account's endpoint was just seen trying to register from (its
    /// REGISTERs dropped by the table), read back for the caller to confirm.
    Attempted,
}

impl AddressMode {
    pub fn name(self) -> &'static str {
        match self {
            AddressMode::Source => "source",
            AddressMode::Registered => "registered",
            AddressMode::Keyed => "keyed",
            AddressMode::Attempted => "attempted",
        }
    }

    pub fn parse(s: &str) -> Option<AddressMode> {
        match s.trim() {
            "source" => Some(AddressMode::Source),
            "registered" => Some(AddressMode::Registered),
            "keyed" => Some(AddressMode::Keyed),
            "attempted" => Some(AddressMode::Attempted),
            _ => None,
        }
    }
}

/// The account a passcode belongs to, as the flow needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub endpoint: Option<String>,
    pub modes: Vec<AddressMode>,
}

/// What Asterisk told us about the call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Call {
    pub channel: String,
    pub uniqueid: String,
    /// Caller ID number, as Asterisk has it.
    pub number: String,
    /// The SIP peer: the address the call came from, for a PJSIP channel.
    pub peer: Option<IpAddr>,
    /// The PJSIP endpoint the call came from, if any.
    pub endpoint: Option<String>,
}

pub enum PasscodeVerdict {
    Accepted(Account),
    /// Wrong, locked out, suspended, disabled: the caller is not told which.
    Rejected,
}

/// The daemon's side of the call.
pub trait Backend: Send + Sync {
    fn verify(&self, call: &Call, passcode: Passcode) -> impl Future<Output = PasscodeVerdict> + Send;
    /// Addresses `endpoint` is registered from, as far as the daemon knows (AMI).
    fn registered(&self, endpoint: &str) -> impl Future<Output = Vec<IpAddr>> + Send;
    /// The one address `endpoint`'s phone was just seen trying to register from: `None` when
    /// none, several, or not surely only one did, or when that address may not be granted
    /// (banned, trusted already, unusable). Never a guess.
    fn attempted(&self, endpoint: &str) -> impl Future<Output = Option<IpAddr>> + Send;
    /// Whether `ip` may be granted; the reason is for the log, never for the caller.
    fn check_address(&self, ip: IpAddr) -> Result<(), String>;
    /// Grants `ip` for `account`, found by `mode`; returns how long access lasts.
    fn grant(
        &self,
        account: &Account,
        ip: IpAddr,
        mode: AddressMode,
        call: &Call,
    ) -> impl Future<Output = Result<Duration, String>> + Send;
    /// After a grant to `ip`: waits (a few seconds at most, as configured) for `endpoint` to
    /// register from `ip`. `None` when the wait is off; otherwise whether it did.
    fn wait_connected(&self, endpoint: &str, ip: IpAddr) -> impl Future<Output = Option<bool>> + Send;
}

/// How the call ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Granted {
        account: String,
        address: IpAddr,
        ttl: Duration,
    },
    Rejected,
    NoAddress {
        account: String,
    },
    GrantFailed {
        account: String,
        reason: String,
    },
    HungUp,
    Failed(String),
}

/// Runs the whole call: answer, passcode, address, grant, tell the caller, hang up.
pub async fn run<S, B>(s: &mut Session<S>, backend: &B, settings: &CallFlowSettings) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
    B: Backend,
{
    let outcome = match flow(s, backend, settings).await {
        Ok(o) => o,
        Err(SessionError::Hangup) => Outcome::HungUp,
        Err(e) => Outcome::Failed(e.to_string()),
    };
    if outcome != Outcome::HungUp {
        s.hangup().await;
    }
    outcome
}

async fn flow<S, B>(
    s: &mut Session<S>,
    backend: &B,
    settings: &CallFlowSettings,
) -> Result<Outcome, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    B: Backend,
{
    let mut call = Call {
        channel: s.env().get("channel").unwrap_or_default().to_string(),
        uniqueid: s.env().get("uniqueid").unwrap_or_default().to_string(),
        number: s.env().get("callerid").unwrap_or_default().to_string(),
        ..Call::default()
    };
    s.answer().await?;
    if call.channel.starts_with("PJSIP/") {
        call.peer = s
            .get_variable("CHANNEL(pjsip,remote_addr)")
            .await?
            .and_then(|a| host_port(&a));
        call.endpoint = s.get_variable("CHANNEL(endpoint)").await?;
    }
    let p = &settings.prompts;
    let timeout = settings.digit_timeout.as_millis().min(u32::MAX as u128) as u32;
    let mut account = None;
    for attempt in 0..settings.tries {
        let prompt = if attempt == 0 { &p.passcode } else { &p.retry };
        let (digits, _) = prompt_digits(s, prompt, timeout, settings.max_digits).await?;
        if let PasscodeVerdict::Accepted(a) = backend.verify(&call, Passcode::new(digits)).await {
            account = Some(a);
            break;
        }
    }
    let Some(account) = account else {
        play(s, &p.goodbye).await?;
        return Ok(Outcome::Rejected);
    };
    let Some((address, mode)) = choose_address(s, backend, settings, &call, &account).await? else {
        play(s, &p.no_address).await?;
        play(s, &p.goodbye).await?;
        return Ok(Outcome::NoAddress {
            account: account.name,
        });
    };
    match backend.grant(&account, address, mode, &call).await {
        Ok(ttl) => {
            // The grant is in the table already: the caller hears it is open before any wait.
            play(s, &p.granted).await?;
            say_duration(s, settings, ttl).await?;
            if let Some(ep) = &account.endpoint {
                match backend.wait_connected(ep, address).await {
                    Some(true) => play(s, &p.connected).await?,
                    Some(false) => play(s, &p.not_connected).await?,
                    None => {}
                }
            }
            play(s, &p.goodbye).await?;
            Ok(Outcome::Granted {
                account: account.name,
                address,
                ttl,
            })
        }
        Err(reason) => {
            play(s, &p.no_address).await?;
            Ok(Outcome::GrantFailed {
                account: account.name,
                reason,
            })
        }
    }
}

async fn choose_address<S, B>(
    s: &mut Session<S>,
    backend: &B,
    settings: &CallFlowSettings,
    call: &Call,
    account: &Account,
) -> Result<Option<(IpAddr, AddressMode)>, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    B: Backend,
{
    for &mode in &account.modes {
        let found = match mode {
            AddressMode::Source => call.peer.filter(|ip| backend.check_address(*ip).is_ok()),
            AddressMode::Attempted => match &account.endpoint {
                Some(ep) => attempted_address(s, backend, settings, ep).await?,
                None => None,
            },
            AddressMode::Registered => {
                let Some(ep) = account.endpoint.clone().or_else(|| call.endpoint.clone()) else {
                    continue;
                };
                let mut found = backend.registered(&ep).await;
                if found.is_empty() {
                    found = registered_from_dialplan(s, &ep).await?;
                }
                found.into_iter().find(|ip| backend.check_address(*ip).is_ok())
            }
            AddressMode::Keyed => keyed_address(s, backend, settings).await?,
        };
        if let Some(ip) = found {
            return Ok(Some((ip, mode)));
        }
    }
    Ok(None)
}

/// The `attempted` mode: the one address the endpoint's phone is trying to register from, read
/// back and confirmed with 1. None, several, or a refusal to confirm: the caller hears so and
/// the next mode is tried.
async fn attempted_address<S, B>(
    s: &mut Session<S>,
    backend: &B,
    settings: &CallFlowSettings,
    endpoint: &str,
) -> Result<Option<IpAddr>, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    B: Backend,
{
    let p = &settings.prompts;
    // Checked again here: whatever the backend says, nothing ungrantable is offered.
    let Some(ip) = backend
        .attempted(endpoint)
        .await
        .filter(|ip| backend.check_address(*ip).is_ok())
    else {
        play(s, &p.attempt_unclear).await?;
        return Ok(None);
    };
    play(s, &p.attempt_found).await?;
    say_address(s, settings, ip).await?;
    let timeout = settings.digit_timeout.as_millis().min(u32::MAX as u128) as u32;
    let (answer, _) = prompt_digits(s, &p.confirm, timeout, 1).await?;
    Ok((answer == "1").then_some(ip))
}

/// "Colon", between the groups of an IPv6 address read back.
const COLON: &str = "letters/ascii58";

/// An address read back as the keyed mode reads it: each IPv4 octet's digits, "dot" between;
/// an IPv6 address group by group, "colon" between, each hex digit spoken.
async fn say_address<S>(
    s: &mut Session<S>,
    settings: &CallFlowSettings,
    ip: IpAddr,
) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    s.stream_file(&settings.prompts.dot).await?;
                }
                s.say_digits(&octet.to_string()).await?;
            }
        }
        IpAddr::V6(v6) => {
            for (i, group) in v6.segments().iter().enumerate() {
                if i > 0 {
                    s.stream_file(COLON).await?;
                }
                for c in format!("{group:x}").chars() {
                    if c.is_ascii_digit() {
                        s.say_digits(&c.to_string()).await?;
                    } else {
                        s.stream_file(&format!("letters/{c}")).await?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The endpoint's registered contacts, read through the PJSIP dialplan functions (used when the
/// AMI listener is not running or has not seen the endpoint).
async fn registered_from_dialplan<S>(s: &mut Session<S>, endpoint: &str) -> Result<Vec<IpAddr>, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = Vec::new();
    if !is_plain_name(endpoint) {
        return Ok(out);
    }
    let aors = s
        .get_full_variable(&format!("${{PJSIP_ENDPOINT({endpoint},aors)}}"))
        .await?
        .unwrap_or_default();
    for aor in aors
        .split(',')
        .map(str::trim)
        .filter(|a| is_plain_name(a))
        .take(8)
    {
        let contacts = s
            .get_full_variable(&format!("${{PJSIP_AOR({aor},contact)}}"))
            .await?
            .unwrap_or_default();
        for contact in contacts
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .take(8)
        {
            if !is_plain_name(contact) {
                continue;
            }
            // via_addr is where the REGISTER came from (behind NAT, the public address).
            let via = s
                .get_full_variable(&format!("${{PJSIP_CONTACT({contact},via_addr)}}"))
                .await?;
            let uri = s
                .get_full_variable(&format!("${{PJSIP_CONTACT({contact},uri)}}"))
                .await?;
            if let Some(ip) = via
                .as_deref()
                .and_then(host_port)
                .or_else(|| uri.as_deref().and_then(uri_host))
            {
                out.push(ip);
            }
        }
    }
    Ok(out)
}

/// Endpoint, AOR and contact names go inside a dialplan expression: allow only what such names
/// are made of, so nothing the caller or a contact controls can change the expression.
fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@;:+=/".contains(c))
}

async fn keyed_address<S, B>(
    s: &mut Session<S>,
    backend: &B,
    settings: &CallFlowSettings,
) -> Result<Option<IpAddr>, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    B: Backend,
{
    let p = &settings.prompts;
    let timeout = settings.digit_timeout.as_millis().min(u32::MAX as u128) as u32;
    for _ in 0..settings.address_tries {
        let (keyed, _) = prompt_digits(s, &p.enter_address, timeout, 15).await?;
        let Some(ip) = parse_keyed(&keyed) else {
            play(s, &p.refused_address).await?;
            continue;
        };
        if backend.check_address(IpAddr::V4(ip)).is_err() {
            play(s, &p.refused_address).await?;
            continue;
        }
        play(s, &p.you_entered).await?;
        say_address(s, settings, IpAddr::V4(ip)).await?;
        let (answer, _) = prompt_digits(s, &p.confirm, timeout, 1).await?;
        if answer == "1" {
            return Ok(Some(IpAddr::V4(ip)));
        }
    }
    Ok(None)
}

/// `203*0*113*7` → 203.0.113.7. Exactly four decimal octets, each 0–255.
pub fn parse_keyed(keyed: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = keyed.split('*').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (o, p) in octets.iter_mut().zip(parts) {
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = p.parse().ok()?;
    }
    Some(Ipv4Addr::from(octets))
}

async fn play<S>(s: &mut Session<S>, files: &[String]) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for f in files {
        s.stream_file(f).await?;
    }
    Ok(())
}

/// Played while the rest of an entry is read, once a key cut a prompt short: a second of silence.
pub const ENTRY_GOES_ON: &str = "silence/1";

/// Plays all but the last file, then prompts with the last and collects digits. A key pressed
/// during any of the files starts the entry there, as it would during a one-file prompt: a caller
/// who knows what is asked need not wait for the whole sentence.
async fn prompt_digits<S>(
    s: &mut Session<S>,
    files: &[String],
    timeout_ms: u32,
    max: u32,
) -> Result<(String, bool), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (last, before) = files
        .split_last()
        .map(|(l, b)| (l.as_str(), b))
        .unwrap_or(("beep", &[]));
    for f in before {
        match s.stream_file_until_key(f).await? {
            None => {}
            Some('#') => return Ok((String::new(), false)),
            Some(key) if max <= 1 => return Ok((key.to_string(), false)),
            Some(key) => {
                let (rest, timed_out) = s.get_data(ENTRY_GOES_ON, timeout_ms, max - 1).await?;
                return Ok((format!("{key}{rest}"), timed_out));
            }
        }
    }
    s.get_data(last, timeout_ms, max).await
}

/// "N hours" for whole hours, otherwise "N minutes".
async fn say_duration<S>(
    s: &mut Session<S>,
    settings: &CallFlowSettings,
    ttl: Duration,
) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let secs = ttl.as_secs();
    if secs >= 3600 && secs.is_multiple_of(3600) {
        s.say_number((secs / 3600) as i64).await?;
        s.stream_file(&settings.prompts.hours).await?;
    } else {
        s.say_number(secs.div_ceil(60) as i64).await?;
        s.stream_file(&settings.prompts.minutes).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
