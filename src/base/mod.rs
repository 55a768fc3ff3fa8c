//! Values and their parsing, shared by every layer: addresses and networks, durations, clocks,
//! defaults, poison-tolerant locks and secrets.

pub mod addr;
pub mod clock;
pub mod defaults;
pub mod duration;
pub mod lock;
pub mod secret;
