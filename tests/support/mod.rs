//! Test support shared by the integration and end-to-end tests.
#![allow(dead_code)]

pub mod daemon;
pub mod flood;
pub mod netns;
