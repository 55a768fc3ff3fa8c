//! AMI client: registered contacts, active calls, security events.
