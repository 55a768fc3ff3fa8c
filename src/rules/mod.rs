//! Pure policy state, time passed in: how many passcode guesses are allowed, who fails AMI
//! logins too often, which calls are live, which contacts are registered, which addresses tried to
//! register as whom.

pub mod attempts;
pub mod calls;
pub mod contacts;
pub mod limiter;
pub mod offenders;
