//! What a DISA call flow can be tuned with: tries, timeouts, and the sound files it plays.

use std::time::Duration;

/// Sound files, each a list: all but the last are played, the last prompts for digits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompts {
    pub passcode: Vec<String>,
    pub retry: Vec<String>,
    pub enter_address: Vec<String>,
    pub you_entered: Vec<String>,
    pub dot: String,
    pub confirm: Vec<String>,
    /// Before the read-back of the address the phone is trying to register from.
    pub attempt_found: Vec<String>,
    /// No single address was seen trying to register (none, or several): on to the next mode.
    pub attempt_unclear: Vec<String>,
    /// After a grant: the phone registered from the granted address.
    pub connected: Vec<String>,
    /// After a grant: the phone has not registered yet (access is open all the same).
    pub not_connected: Vec<String>,
    pub refused_address: Vec<String>,
    pub no_address: Vec<String>,
    pub granted: Vec<String>,
    pub hours: String,
    pub minutes: String,
    pub goodbye: Vec<String>,
}

impl Default for Prompts {
    fn default() -> Self {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        Prompts {
            passcode: v(&["agent-pass"]),
            retry: v(&["auth-incorrect"]),
            // No core sound says "address": "your I P; press star for dot, then press pound".
            enter_address: v(&[
                "your",
                "letters/i",
                "letters/p",
                "vm-press",
                "digits/star",
                "vm-for",
                "letters/dot",
                "vm-then-pound",
            ]),
            you_entered: v(&["you-entered"]),
            dot: "letters/dot".into(),
            confirm: v(&["if-correct-press", "digits/1"]),
            // No core sound says "phone" or "register": "your I P is …", "… is unavailable",
            // "your telephone number is activated".
            attempt_found: v(&["your", "letters/i", "letters/p", "is"]),
            attempt_unclear: v(&["your", "letters/i", "letters/p", "vm-isunavail"]),
            connected: v(&["your", "telephone-number", "is", "activated"]),
            not_connected: v(&["your", "telephone-number", "vm-isunavail"]),
            refused_address: v(&["invalid"]),
            no_address: v(&["cannot-complete-as-dialed"]),
            granted: v(&["auth-thankyou"]),
            hours: "hours".into(),
            minutes: "minutes".into(),
            goodbye: v(&["vm-goodbye"]),
        }
    }
}

#[derive(Clone, Debug)]
pub struct CallFlowSettings {
    /// Passcode tries per call.
    pub tries: u32,
    /// Silence that ends digit entry.
    pub digit_timeout: Duration,
    /// Most digits read for a passcode (longer input is cut and then fails).
    pub max_digits: u32,
    /// Keyed-address attempts per call.
    pub address_tries: u32,
    pub prompts: Prompts,
}

impl Default for CallFlowSettings {
    fn default() -> Self {
        CallFlowSettings {
            tries: 3,
            digit_timeout: Duration::from_secs(8),
            max_digits: 32,
            address_tries: 3,
            prompts: Prompts::default(),
        }
    }
}
