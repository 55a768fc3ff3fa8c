//! Test support shared by the integration and end-to-end tests.
#![allow(dead_code)]

pub mod ami_peer;
pub mod daemon;
pub mod disa_daemon;
pub mod flood;
pub mod metrics;
pub mod netns;
pub mod pg;

// End-to-end harness: real Asterisk and SIPp from a cached Debian sid chroot, in namespaces.
pub mod ami;
pub mod asterisk;
pub mod chroot;
pub mod env;
pub mod fastagi;
pub mod sipp;
