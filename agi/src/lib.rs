//! FastAGI protocol: sans-IO codec, TCP server, and the DISA call flow.
