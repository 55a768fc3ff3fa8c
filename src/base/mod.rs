//! Values and their parsing, shared by every layer: addresses and networks, durations, clocks,
//! defaults, poison-tolerant locks, admins' names and secrets, the pacing of background work.

pub mod addr;
pub mod clock;
pub mod defaults;
pub mod duration;
pub mod lock;
pub mod name;
pub mod pace;
pub mod secret;
