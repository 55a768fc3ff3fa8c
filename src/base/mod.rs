//! Values and their parsing, shared by every layer: addresses and networks, durations, clocks,
//! defaults and secrets.

pub mod addr;
pub mod clock;
pub mod defaults;
pub mod duration;
pub mod secret;
