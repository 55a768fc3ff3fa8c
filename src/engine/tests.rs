//! The engine's rules, run against the in-memory store and table: milliseconds, no root.
