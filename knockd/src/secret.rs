//! Profile secrets: 32 random bytes written as 64 hex digits; `Debug` never shows them, and a file
//! that holds one is refused unless only its owner can read it (mode 0600 or stricter).

use std::fmt;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// Bytes in a generated secret.
pub const SECRET_LEN: usize = 32;
/// The shortest secret accepted (128 bits).
pub const SECRET_MIN: usize = 16;

/// A shared secret. Compared in constant time; shown by `Debug` as `KnockSecret(..)`.
#[derive(Clone)]
pub struct KnockSecret(Vec<u8>);

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read secret file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "secret file {path} is mode {mode:04o}; it must be readable by its owner only \
         (chmod 600 {path})"
    )]
    Mode { path: PathBuf, mode: u32 },
    #[error("{0}")]
    Format(String),
}

impl KnockSecret {
    /// A new secret from the OS random source.
    pub fn generate() -> std::io::Result<KnockSecret> {
        let mut b = vec![0u8; SECRET_LEN];
        crate::os_random(&mut b)?;
        Ok(KnockSecret(b))
    }

    pub fn from_bytes(b: &[u8]) -> KnockSecret {
        KnockSecret(b.to_vec())
    }

    /// Parses hex digits (whitespace around them ignored).
    pub fn from_hex(s: &str) -> Result<KnockSecret, SecretError> {
        let t = s.trim();
        let bad = || {
            SecretError::Format(format!(
                "a secret is at least {} hex digits ({SECRET_MIN} bytes); `knock-profile add` writes one",
                SECRET_MIN * 2
            ))
        };
        if !t.len().is_multiple_of(2) || t.len() < SECRET_MIN * 2 || !t.bytes().all(|c| c.is_ascii_hexdigit())
        {
            return Err(bad());
        }
        let bytes = (0..t.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&t[i..i + 2], 16).map_err(|_| bad()))
            .collect::<Result<Vec<u8>, _>>()?;
        Ok(KnockSecret(bytes))
    }

    /// Reads a secret file, refusing it unless its mode is 0600 or stricter.
    pub fn load(path: &Path) -> Result<KnockSecret, SecretError> {
        check_private(path)?;
        let text =
            zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| SecretError::Read {
                path: path.to_path_buf(),
                source,
            })?);
        KnockSecret::from_hex(&text).map_err(|e| SecretError::Format(format!("{}: {e}", path.display())))
    }

    /// The secret as lowercase hex, for writing it once into a file or a client snippet.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// Wiped on drop, so a freed buffer does not keep the key.
impl Drop for KnockSecret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for KnockSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KnockSecret(..)")
    }
}

impl PartialEq for KnockSecret {
    fn eq(&self, other: &KnockSecret) -> bool {
        self.0.len() == other.0.len() && bool::from(self.0.ct_eq(&other.0))
    }
}

impl Eq for KnockSecret {}

/// Why a file is not fit to hold a secret.
#[derive(Debug)]
pub enum NotPrivate {
    /// Its metadata cannot be read (missing, no permission).
    Unreadable(std::io::Error),
    /// Its group or others have some access; the mode (with setuid/sticky bits) as found.
    Mode(u32),
}

/// The one 0600 check for every secret file: knock secrets, the DISA key, the AMI secret and
/// the doctor's secrets check all go through it, each wording the refusal its own way. Refuses
/// a file that anyone but its owner can read or write (on Unix; elsewhere the OS's own ACLs are
/// the guard).
pub fn private_mode(path: &Path) -> Result<(), NotPrivate> {
    let meta = std::fs::metadata(path).map_err(NotPrivate::Unreadable)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(NotPrivate::Mode(mode));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

/// [`private_mode`] as a [`SecretError`].
pub fn check_private(path: &Path) -> Result<(), SecretError> {
    private_mode(path).map_err(|e| match e {
        NotPrivate::Unreadable(source) => SecretError::Read {
            path: path.to_path_buf(),
            source,
        },
        NotPrivate::Mode(mode) => SecretError::Mode {
            path: path.to_path_buf(),
            mode,
        },
    })
}

/// Writes `text` to a new file readable by its owner only; refuses to overwrite.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_and_hex_round_trips() {
        let s = KnockSecret::generate().unwrap();
        assert_eq!(format!("{s:?}"), "KnockSecret(..)");
        assert!(!format!("{s:?}").contains(&s.to_hex()[..8]));
        assert_eq!(KnockSecret::from_hex(&s.to_hex()).unwrap(), s);
        assert_ne!(KnockSecret::generate().unwrap(), s);
        assert!(KnockSecret::from_hex("abcd").is_err(), "too short");
        assert!(KnockSecret::from_hex(&"zz".repeat(16)).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.secret");
        let s = KnockSecret::generate().unwrap();
        write_private(&p, &format!("{}\n", s.to_hex())).unwrap();
        assert_eq!(KnockSecret::load(&p).unwrap(), s);
        assert!(write_private(&p, "x").is_err(), "never overwrites");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = KnockSecret::load(&p).unwrap_err().to_string();
        assert!(e.contains("0644") && e.contains("chmod 600"), "{e}");
    }
}
