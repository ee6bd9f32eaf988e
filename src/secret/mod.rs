//! The optional shared secret (`SecretFile`, `--secret-file`): the key, read once at start,
//! the authenticated datagram envelope (`datagram`), the `Authorization` field of peer
//! requests (`http`), and the tally of what was refused for want of the secret (`refusals`).
//!
//! Every MAC is HMAC-SHA256 from the RustCrypto `hmac` and `sha2` crates, and every check
//! goes through `Mac::verify_slice` (constant time); nothing here is hand-written
//! cryptography. The datagram and HTTP inputs start with different fixed prefixes, so a MAC
//! of one can never pass for the other. Pure but for [`Secret::load`] (which reads the file)
//! and [`unix_millis`] (which reads the wall clock): the shells call those, the rest takes
//! bytes and times as arguments.
//!
//! It does not decide where the checks happen: the event loop opens datagrams before the
//! discovery core sees them and seals them after, the peer server checks requests, and the
//! relay signs its requests to peers.

pub mod datagram;
pub mod http;
pub mod refusals;

use std::fmt;
use std::fs;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::discovery::Transmit;

pub use datagram::{DatagramAuth, Refused};
pub use refusals::Refusals;

/// Shortest secret accepted (after the trailing newline is cut).
pub const MIN_SECRET: usize = 16;
/// Longest secret file read.
pub const MAX_SECRET: usize = 4096;
/// Clocks of hosts sharing a secret may differ by this much either way: a datagram or a
/// request stamped further from our clock is refused.
/// The credential name under which systemd hands the secret over (`LoadCredential=flocon-secret:
/// PATH`): with no `SecretFile`, `$CREDENTIALS_DIRECTORY/flocon-secret` is used when it exists.
pub const CREDENTIAL: &str = "flocon-secret";

/// The secret file to read: the configured one, else the credential systemd passed
/// (`credentials_directory` is `$CREDENTIALS_DIRECTORY`), else none.
pub fn file_to_use(
    configured: Option<&Path>,
    credentials_directory: Option<&str>,
) -> Option<PathBuf> {
    if let Some(path) = configured {
        return Some(path.to_path_buf());
    }
    let dir = credentials_directory.filter(|d| d.starts_with('/'))?;
    let path = Path::new(dir).join(CREDENTIAL);
    path.exists().then_some(path)
}

pub const WINDOW: Duration = Duration::from_secs(30);

/// The HMAC-SHA256 instance every MAC here is made with.
pub(crate) type HmacSha256 = Hmac<Sha256>;

/// The shared secret. Cheap to clone; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Arc<[u8]>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.key.len())
    }
}

impl Secret {
    /// A secret of these bytes (tests, fuzzing; the daemon uses [`Secret::load`]). `None` when
    /// shorter than [`MIN_SECRET`] or longer than [`MAX_SECRET`].
    pub fn from_bytes(key: &[u8]) -> Option<Secret> {
        (MIN_SECRET..=MAX_SECRET)
            .contains(&key.len())
            .then(|| Secret { key: key.into() })
    }

    /// Reads the secret from `path`: its bytes, one trailing newline (`\n` or `\r\n`) cut.
    /// Refused, with a message that says how to fix it: a file that is not a regular file,
    /// that group or others may read or write (mode must be 0600 or 0400, as systemd gives a
    /// credential), that is empty, shorter than [`MIN_SECRET`] or longer than [`MAX_SECRET`]
    /// bytes.
    pub fn load(path: &Path) -> Result<Secret, String> {
        let shown = path.display();
        let mut file =
            fs::File::open(path).map_err(|e| format!("cannot read secret file {shown}: {e}"))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot read secret file {shown}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("secret file {shown} is not a regular file"));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "secret file {shown} has mode {mode:04o}: group and others must have no access \
                 (chmod 600 {shown}, owned by flocon's user)"
            ));
        }
        let mut bytes = Vec::new();
        file.by_ref()
            .take(MAX_SECRET as u64 + 3)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read secret file {shown}: {e}"))?;
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        if bytes.is_empty() {
            return Err(format!("secret file {shown} is empty"));
        }
        Secret::from_bytes(&bytes).ok_or_else(|| {
            let size = if bytes.len() > MAX_SECRET {
                format!("more than {MAX_SECRET} bytes")
            } else {
                format!("{} bytes", bytes.len())
            };
            format!(
                "secret file {shown} holds {size}: a secret has {MIN_SECRET} to {MAX_SECRET} \
                 (make one with: head -c 32 /dev/urandom | base64 > {shown})"
            )
        })
    }

    /// A MAC instance keyed with the secret.
    pub(crate) fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length; this cannot fail.
        match <HmacSha256 as KeyInit>::new_from_slice(&self.key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        }
    }

    /// HMAC-SHA256 of the concatenation of `parts`.
    pub(crate) fn tag(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.mac();
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is the HMAC-SHA256 of the concatenation of `parts` (constant time).
    pub(crate) fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let mut mac = self.mac();
        for p in parts {
            mac.update(p);
        }
        mac.verify_slice(tag).is_ok()
    }
}

/// The event loop's side of a received datagram: with no secret, `bytes` as they are; with
/// one, the inner datagram of an authenticated one, or `None` when it is refused or repeated
/// (counted in `refusals`).
pub fn open<'a>(
    auth: &mut Option<DatagramAuth>,
    refusals: &mut Refusals,
    bytes: &'a [u8],
    from: SocketAddr,
    now: Instant,
) -> Option<&'a [u8]> {
    let Some(auth) = auth else {
        return Some(bytes);
    };
    match auth.open(bytes, unix_millis()) {
        Ok(inner) => Some(inner),
        Err(Refused::Repeated) => {
            refusals.repeated += 1;
            None
        }
        Err(why) => {
            refusals.datagram(from.ip(), why, now);
            None
        }
    }
}

/// The event loop's side of a datagram to send: sealed now when there is a secret.
pub fn seal(auth: &Option<DatagramAuth>, mut t: Transmit) -> Transmit {
    if let Some(auth) = auth {
        t.payload = auth.seal(&t.payload, unix_millis());
    }
    t
}

/// Milliseconds since the Unix epoch by the wall clock (0 before 1970).
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::path::PathBuf {
        let p = dir.join(name);
        fs::write(&p, bytes).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn the_configured_file_wins_then_the_systemd_credential() {
        let dir = std::env::temp_dir().join(format!("flocon-cred-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let d = dir.to_str().unwrap();
        let given = Path::new("/etc/flocon/secret");
        assert_eq!(file_to_use(Some(given), Some(d)), Some(given.to_path_buf()));
        // No credential of that name passed: none.
        assert_eq!(file_to_use(None, Some(d)), None);
        assert_eq!(file_to_use(None, None), None);
        let cred = write(&dir, CREDENTIAL, b"0123456789abcdef", 0o400);
        assert_eq!(file_to_use(None, Some(d)), Some(cred));
        // A relative $CREDENTIALS_DIRECTORY is not systemd's: ignored.
        assert_eq!(file_to_use(None, Some("relative")), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_checks_mode_size_and_cuts_one_newline() {
        let dir = std::env::temp_dir().join(format!("flocon-secret-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let good = write(&dir, "good", b"0123456789abcdef0123\n", 0o600);
        let s = Secret::load(&good).unwrap();
        assert_eq!(&*s.key, b"0123456789abcdef0123");
        assert_eq!(format!("{s:?}"), "Secret(20 bytes)");
        let crlf = write(&dir, "crlf", b"0123456789abcdef\r\n", 0o400);
        assert_eq!(&*Secret::load(&crlf).unwrap().key, b"0123456789abcdef");
        let open = write(&dir, "open", b"0123456789abcdef0123", 0o644);
        let e = Secret::load(&open).unwrap_err();
        assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
        let group = write(&dir, "group", b"0123456789abcdef0123", 0o640);
        assert!(Secret::load(&group).unwrap_err().contains("0640"));
        let empty = write(&dir, "empty", b"\n", 0o600);
        assert!(Secret::load(&empty).unwrap_err().contains("is empty"));
        let short = write(&dir, "short", b"tooshort", 0o600);
        assert!(Secret::load(&short).unwrap_err().contains("8 bytes"));
        let long = write(&dir, "long", &[b'x'; MAX_SECRET * 2], 0o600);
        assert!(
            Secret::load(&long)
                .unwrap_err()
                .contains("more than 4096 bytes")
        );
        let most = write(&dir, "most", &[b'x'; MAX_SECRET], 0o600);
        assert!(Secret::load(&most).is_ok());
        assert!(
            Secret::load(&dir.join("missing"))
                .unwrap_err()
                .contains("cannot read")
        );
        assert!(Secret::load(&dir).is_err(), "a directory");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tags_verify_only_with_the_same_key_and_bytes() {
        let a = Secret::from_bytes(b"sixteen bytes!!!").unwrap();
        let b = Secret::from_bytes(b"sixteen bytes!!?").unwrap();
        let t = a.tag(&[b"ab", b"c"]);
        assert!(a.verify(&[b"a", b"bc"], &t));
        assert!(!a.verify(&[b"abd"], &t));
        assert!(!b.verify(&[b"abc"], &t));
        assert!(!a.verify(&[b"abc"], &t[..31]));
        assert!(Secret::from_bytes(b"short").is_none());
    }
}
