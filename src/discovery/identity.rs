//! Who this host is on the discovery protocol, and the tunables of the protocol core.
//!
//! Owns `Identity` (host id, peer TCP port, distribution, architecture), `Params`, the label
//! clean-up that makes any identity safe to send, and the pure `/etc/os-release` reader. It does
//! not read files or call the kernel: `host.rs` does that.

use std::time::Duration;

use super::wire::{MAX_LABEL_LEN, is_valid_label};

/// What this host announces about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Random per start (see `host::random_seed`): a restarted daemon is a new peer.
    pub host_id: u64,
    /// Port of the peer-facing file server.
    pub tcp_port: u16,
    /// `ID` of `/etc/os-release`, e.g. `arch`, `archarm`.
    pub distro: String,
    /// Architecture, e.g. `x86_64`, `aarch64`.
    pub arch: String,
}

impl Identity {
    /// A copy whose labels can go on the wire (see [`sanitize_label`]).
    pub fn sanitized(&self) -> Identity {
        Identity {
            host_id: self.host_id,
            tcp_port: self.tcp_port,
            distro: sanitize_label(&self.distro),
            arch: sanitize_label(&self.arch),
        }
    }
}

/// Tunables of the protocol core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Mean time between two ANNOUNCEs (each one is jittered by ±10 %). Peers are forgotten
    /// after 3 intervals of silence. At least 100 ms is used.
    pub announce_interval: Duration,
    /// How long a question waits for answers; the WHO_HAS is sent again to the silent peers at
    /// half of it. At least 1 ms is used.
    pub lookup_timeout: Duration,
    /// Most peers kept in the table; at least 1 is used.
    pub max_peers: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            announce_interval: Duration::from_secs(60),
            lookup_timeout: Duration::from_millis(250),
            max_peers: 1024,
        }
    }
}

impl Params {
    /// The values actually used: each field raised to its minimum.
    pub fn clamped(self) -> Params {
        Params {
            announce_interval: self.announce_interval.max(Duration::from_millis(100)),
            lookup_timeout: self.lookup_timeout.max(Duration::from_millis(1)),
            max_peers: self.max_peers.max(1),
        }
    }
}

/// Make a distribution id or architecture fit the wire: characters outside `[A-Za-z0-9._-]` are
/// dropped, the result is cut to 64 bytes, and an empty result becomes `unknown`.
pub fn sanitize_label(s: &str) -> String {
    if is_valid_label(s) {
        return s.to_owned();
    }
    let cleaned: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(MAX_LABEL_LEN)
        .collect();
    if cleaned.is_empty() {
        "unknown".to_owned()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_cleaned() {
        assert_eq!(sanitize_label("arch"), "arch");
        assert_eq!(sanitize_label("x86_64"), "x86_64");
        assert_eq!(sanitize_label("Arch Linux"), "ArchLinux");
        assert_eq!(sanitize_label(""), "unknown");
        assert_eq!(sanitize_label("ü/\n"), "unknown");
        let long = sanitize_label(&"a".repeat(100));
        assert_eq!(long.len(), MAX_LABEL_LEN);
        assert!(is_valid_label(&long));
    }

    #[test]
    fn identity_sanitized_keeps_numbers() {
        let me = Identity {
            host_id: 5,
            tcp_port: 7,
            distro: "a b".into(),
            arch: String::new(),
        };
        let s = me.sanitized();
        assert_eq!((s.host_id, s.tcp_port), (5, 7));
        assert_eq!((s.distro.as_str(), s.arch.as_str()), ("ab", "unknown"));
    }

    #[test]
    fn params_clamp() {
        let p = Params {
            announce_interval: Duration::ZERO,
            lookup_timeout: Duration::ZERO,
            max_peers: 0,
        }
        .clamped();
        assert_eq!(p.announce_interval, Duration::from_millis(100));
        assert_eq!(p.lookup_timeout, Duration::from_millis(1));
        assert_eq!(p.max_peers, 1);
        assert_eq!(Params::default().clamped(), Params::default());
    }
}
