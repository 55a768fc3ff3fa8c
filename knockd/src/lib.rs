//! Knock state machines, SPA packet format, NFLOG listener, knock client.
