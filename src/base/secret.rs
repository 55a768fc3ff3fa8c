//! Secrets: the DISA server key, passcodes and their tags. Passcodes are stored only as
//! HMAC-SHA256 tags under the key; the key lives in its own 0600 file.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use knockd::secret::NotPrivate;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the key file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the key file {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the key file {path} is mode {mode:o}; it must be 0600 (chmod 600 {path})")]
    Mode { path: PathBuf, mode: u32 },
    #[error("the key file {path} does not hold a 64-hex-digit key")]
    Malformed { path: PathBuf },
    #[error("the OS random number generator failed: {0}")]
    Random(String),
}

/// The server key passcode tags are made with.
pub struct DisaKey([u8; 32]);

/// Wiped on drop, so a freed page does not keep the key.
impl Drop for DisaKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for DisaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DisaKey(hidden)")
    }
}

/// A passcode tag: HMAC-SHA256(key, passcode).
pub type Tag = [u8; 32];

impl DisaKey {
    /// Reads the key at `path`, creating it (0600, 32 bytes from the OS RNG) if it is missing.
    /// A key file anyone else can read is refused.
    pub fn load_or_create(path: &Path) -> Result<DisaKey, SecretError> {
        if !path.exists() {
            // The fresh key and its hex are wiped once written; only the loaded copy stays.
            let mut key = Zeroizing::new([0u8; 32]);
            random(&mut *key)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| SecretError::Create {
                    path: path.to_path_buf(),
                    source,
                })?;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|source| SecretError::Create {
                    path: path.to_path_buf(),
                    source,
                })?;
            f.write_all(Zeroizing::new(format!("{}\n", hex(&*key))).as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|source| SecretError::Create {
                    path: path.to_path_buf(),
                    source,
                })?;
        }
        check_private(path)?;
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| SecretError::Read {
            path: path.to_path_buf(),
            source,
        })?);
        let malformed = || SecretError::Malformed {
            path: path.to_path_buf(),
        };
        let t = text.trim();
        if t.len() != 64 {
            return Err(malformed());
        }
        let mut key = DisaKey([0u8; 32]);
        for (i, b) in key.0.iter_mut().enumerate() {
            *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|_| malformed())?;
        }
        Ok(key)
    }

    #[cfg(test)]
    pub fn from_bytes(key: [u8; 32]) -> DisaKey {
        DisaKey(key)
    }

    pub fn tag(&self, passcode: &str) -> Tag {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(passcode.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// Constant-time tag comparison.
pub fn tags_equal(a: &Tag, b: &Tag) -> bool {
    a.ct_eq(b).into()
}

/// Refuses a secret file that is not mode 0600 (or stricter), by the knock secrets' own check.
pub fn check_private(path: &Path) -> Result<(), SecretError> {
    knockd::secret::private_mode(path).map_err(|e| match e {
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

pub fn random(buf: &mut [u8]) -> Result<(), SecretError> {
    getrandom::getrandom(buf).map_err(|e| SecretError::Random(e.to_string()))
}

/// A new passcode of `digits` decimal digits, uniform (rejection sampling, no modulo bias).
pub fn new_passcode(digits: usize) -> Result<ShownOnce, SecretError> {
    let mut out = String::with_capacity(digits);
    let mut buf = [0u8; 64];
    while out.len() < digits {
        random(&mut buf)?;
        for b in buf {
            // 250 = 25 × 10: bytes 250–255 would favour 0–5.
            if b < 250 && out.len() < digits {
                out.push(char::from(b'0' + b % 10));
            }
        }
    }
    Ok(ShownOnce(out))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A secret that is shown to the admin exactly once (a new passcode). `Debug` hides it; only
/// the CLI prints it, on purpose.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShownOnce(String);

impl ShownOnce {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Wiped on drop: the passcode is meant to exist only until it is shown.
impl Drop for ShownOnce {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for ShownOnce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShownOnce(hidden)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_file_is_made_private_and_refused_when_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/disa.key");
        let k1 = DisaKey::load_or_create(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let k2 = DisaKey::load_or_create(&path).unwrap();
        assert_eq!(k1.tag("0123"), k2.tag("0123"), "the same key comes back");
        assert_ne!(k1.tag("0123"), k1.tag("123"), "leading zeros matter");
        assert_eq!(format!("{k1:?}"), "DisaKey(hidden)");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = DisaKey::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("0600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "short").unwrap();
        assert!(DisaKey::load_or_create(&path).is_err());
    }

    #[test]
    fn passcodes_are_digits_of_the_asked_length_and_look_uniform() {
        let mut counts = [0u32; 10];
        for _ in 0..2000 {
            let p = new_passcode(12).unwrap();
            assert_eq!(p.expose().len(), 12);
            for c in p.expose().bytes() {
                counts[(c - b'0') as usize] += 1;
            }
            assert_eq!(format!("{p:?}"), "ShownOnce(hidden)");
        }
        // 24,000 digits: each should be near 2,400.
        assert!(counts.iter().all(|&c| (2100..2700).contains(&c)), "{counts:?}");
    }
}
