//! Recording what happens: audit events (a journal line and a history row each) and the
//! Prometheus counters.

pub mod attempts;
pub mod audit;
pub mod metrics;
