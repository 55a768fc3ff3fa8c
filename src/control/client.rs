//! The control socket's client side: one request, one reply, under the reply cap.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Lines, Reply, Request};
use crate::base::defaults;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach passknockd at {path}: {source} (is it running, and are you root?)")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lost the connection to passknockd: {0}")]
    Io(#[from] std::io::Error),
    #[error("passknockd sent a reply this passknock cannot read: {0}")]
    Reply(String),
}

/// One request, one reply.
pub fn call(socket: &Path, request: &Request) -> Result<Reply, ClientError> {
    let stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.to_path_buf(),
        source,
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut w = stream.try_clone()?;
    let mut line = serde_json::to_vec(request).map_err(|e| ClientError::Reply(e.to_string()))?;
    line.push(b'\n');
    w.write_all(&line)?;
    // The reply is one line, read under a cap however the daemon's bytes arrive.
    let mut stream = stream;
    let mut lines = Lines::new(defaults::CONTROL_MAX_REPLY);
    let mut chunk = vec![0u8; 64 * 1024];
    let line = loop {
        match lines.next_line() {
            Some(Ok(line)) => break line,
            Some(Err(e)) => return Err(ClientError::Reply(e.to_string())),
            None => {}
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break lines.finish().unwrap_or_default();
        }
        lines.feed(&chunk[..n]);
    };
    super::parse_reply(&line).map_err(ClientError::Reply)
}
