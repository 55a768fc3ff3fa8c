//! Runs `nft`: one JSON batch in on stdin, stderr kept so a refusal says why.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nftables::schema::Nftables;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode the nft batch: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("nft refused the batch: {message}")]
    Rejected { message: String },
    #[error("cannot read nft's listing: {0}")]
    Listing(String),
    /// The netlink path (`netlink.rs`): a refused batch or a socket fault, in words.
    #[error("{message}")]
    Kernel { message: String },
}

/// The `nft` program.
#[derive(Clone, Debug)]
pub struct Nft {
    program: PathBuf,
}

impl Nft {
    pub fn new(program: &Path) -> Nft {
        Nft {
            program: program.to_path_buf(),
        }
    }

    /// Applies one batch atomically: all of it or none of it.
    pub fn apply(&self, batch: &Nftables<'_>) -> Result<(), NftError> {
        self.apply_json(&serde_json::to_vec(batch)?)
    }

    /// Applies one batch already encoded as nft JSON.
    pub fn apply_json(&self, json: &[u8]) -> Result<(), NftError> {
        self.run(&["-j", "-f", "-"], Some(json)).map(|_| ())
    }

    /// `nft -j list table inet NAME`, or `None` when the table does not exist.
    pub fn list_table(&self, table: &str) -> Result<Option<Vec<u8>>, NftError> {
        match self.run(&["-j", "list", "table", "inet", table], None) {
            Ok(out) => Ok(Some(out)),
            Err(NftError::Rejected { message }) if message.contains("No such file or directory") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `nft -t -j list table inet NAME`: the table's structure, every set's contents left out;
    /// `None` when the table does not exist.
    pub fn list_table_terse(&self, table: &str) -> Result<Option<Vec<u8>>, NftError> {
        match self.run(&["-t", "-j", "list", "table", "inet", table], None) {
            Ok(out) => Ok(Some(out)),
            Err(NftError::Rejected { message }) if message.contains("No such file or directory") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `nft -j list set inet TABLE SET`, or `None` when it does not exist.
    pub fn list_set(&self, table: &str, set: &str) -> Result<Option<Vec<u8>>, NftError> {
        match self.run(&["-j", "list", "set", "inet", table, set], None) {
            Ok(out) => Ok(Some(out)),
            Err(NftError::Rejected { message }) if message.contains("No such file or directory") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `nft -j list counter inet TABLE NAME`, or `None` when it does not exist.
    pub fn list_counter(&self, table: &str, name: &str) -> Result<Option<Vec<u8>>, NftError> {
        match self.run(&["-j", "list", "counter", "inet", table, name], None) {
            Ok(out) => Ok(Some(out)),
            Err(NftError::Rejected { message }) if message.contains("No such file or directory") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes the table (used by tests and the bench to start clean; the daemon never does).
    pub fn delete_table(&self, table: &str) -> Result<(), NftError> {
        match self.run(&["delete", "table", "inet", table], None) {
            Err(NftError::Rejected { message }) if message.contains("No such file or directory") => Ok(()),
            r => r.map(|_| ()),
        }
    }

    fn run(&self, args: &[&str], input: Option<&[u8]>) -> Result<Vec<u8>, NftError> {
        let spawn = |source| NftError::Spawn {
            program: self.program.clone(),
            source,
        };
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn)?;
        if let Some(data) = input {
            let mut stdin = child.stdin.take().expect("piped stdin");
            // A write error here means nft exited early; its stderr says why.
            let _ = stdin.write_all(data);
        }
        let out = child.wait_with_output().map_err(spawn)?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let mut message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if message.is_empty() {
            message = format!("{} exited with {}", self.program.display(), out.status);
        }
        // nft echoes the whole JSON batch back on a parse error; keep the message readable.
        if message.len() > 2000 {
            let mut cut = 2000;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" …");
        }
        Err(NftError::Rejected { message })
    }
}
