//! Values and their parsing, shared by every layer: addresses and networks, durations, clocks,
//! defaults, poison-tolerant locks, admins' names and secrets.

pub mod addr;
pub mod clock;
pub mod defaults;
pub mod duration;
pub mod lock;
pub mod name;
pub mod secret;
