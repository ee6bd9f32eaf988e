//! TLS under the relay's HTTP exchange with an `https://` mirror: rustls'
//! [`ClientConnection`] driven over the non-blocking socket the loop owns
//! (`read_tls`, `process_new_packets`, `reader`, `writer`, `write_tls`, as
//! rustls' mio examples do), and the trust store it checks mirrors against.
//!
//! Owns: the [`TlsSession`] of one source connection (its reads and writes
//! reduced to the same [`Io`] outcomes as a plain socket's, and why it failed
//! as a small `Copy` [`TlsFailure`]), and [`TlsTrust`], the client
//! configuration made on the first `https://` fetch from the system's CA
//! bundle (as pacman's curl reads it) plus an optional extra CA file or
//! folder (`CaFile`). Verification is rustls' `WebPkiServerVerifier` with its
//! defaults: the chain to a trusted root, validity dates, and the mirror's
//! host name (SNI and a DNS SAN) or IP address (an IP SAN).
//!
//! It does not open, register or close sockets, choose sources or judge
//! answers: `source.rs` calls it where it would read or write the socket.
//! No cryptography is written here: rustls and ring do it all.

use std::io::{self, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{debug, warn};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, ClientConnection, RootCertStore};

use crate::net::Io;

/// The CA bundle pacman's curl uses on Arch Linux (and Debian).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Where the bundle's PEM files are, read when the bundle is missing.
pub const SYSTEM_CA_DIR: &str = "/etc/ssl/certs";
/// A PEM file read for trust anchors may be at most this large (the Arch
/// bundle is about 220 KiB).
const MAX_PEM_FILE: u64 = 16 << 20;
/// At most this many files of a CA folder are read.
const MAX_PEM_FILES: usize = 4096;

/// Why a TLS exchange failed: small and `Copy`, as [`super::fetch::Failure`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFailure {
    /// No trust anchor could be read: no `https://` mirror can be checked.
    NoTrustStore,
    /// The mirror's host is not a valid DNS name or IP address for TLS.
    BadServerName,
    /// The certificate is not valid for the mirror's host name or address.
    WrongName,
    /// The certificate chain does not lead to a trusted root.
    UnknownIssuer,
    Expired,
    NotYetValid,
    Revoked,
    /// Any other certificate problem (bad encoding, bad signature, wrong use).
    BadCertificate,
    /// The server sent a TLS alert (its description, as on the wire).
    Alert(u8),
    /// The connection closed during the handshake.
    HandshakeCut,
    /// The connection closed in the middle of the answer without TLS's
    /// `close_notify`: the bytes may be cut short by anyone on the path.
    Truncated,
    /// The server did not speak TLS, or broke its rules.
    Protocol,
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsFailure::NoTrustStore => f.write_str("no trusted CA certificate could be read"),
            TlsFailure::BadServerName => f.write_str("host is not a valid TLS server name"),
            TlsFailure::WrongName => f.write_str("certificate not valid for this host name"),
            TlsFailure::UnknownIssuer => f.write_str("certificate issued by an untrusted CA"),
            TlsFailure::Expired => f.write_str("certificate expired"),
            TlsFailure::NotYetValid => f.write_str("certificate not valid yet"),
            TlsFailure::Revoked => f.write_str("certificate revoked"),
            TlsFailure::BadCertificate => f.write_str("bad certificate"),
            TlsFailure::Alert(code) => write!(f, "TLS alert {code} from the server"),
            TlsFailure::HandshakeCut => f.write_str("connection closed during the TLS handshake"),
            TlsFailure::Truncated => f.write_str("connection closed without TLS close_notify"),
            TlsFailure::Protocol => f.write_str("TLS protocol error (not a TLS server?)"),
        }
    }
}

impl From<&rustls::Error> for TlsFailure {
    fn from(e: &rustls::Error) -> TlsFailure {
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => TlsFailure::WrongName,
                CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    TlsFailure::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    TlsFailure::NotYetValid
                }
                CertificateError::Revoked => TlsFailure::Revoked,
                _ => TlsFailure::BadCertificate,
            },
            rustls::Error::AlertReceived(alert) => TlsFailure::Alert(u8::from(*alert)),
            _ => TlsFailure::Protocol,
        }
    }
}

/// The trust store and client configuration, made on the first `https://`
/// fetch (idle memory stays small while no mirror is `https://`) and kept.
pub struct TlsTrust {
    /// An extra CA certificate file, or a folder of PEM files (`CaFile`).
    extra: Option<PathBuf>,
    config: Loaded,
}

enum Loaded {
    NotYet,
    Ready(Arc<ClientConfig>),
    /// Nothing could be read (logged once).
    Failed,
}

impl TlsTrust {
    pub fn new(extra: Option<PathBuf>) -> TlsTrust {
        TlsTrust {
            extra,
            config: Loaded::NotYet,
        }
    }

    /// The client configuration, loading the trust store the first time.
    pub fn config(&mut self) -> Result<Arc<ClientConfig>, TlsFailure> {
        if let Loaded::NotYet = self.config {
            self.config = match self.load() {
                Some(config) => Loaded::Ready(Arc::new(config)),
                None => Loaded::Failed,
            };
        }
        match &self.config {
            Loaded::Ready(config) => Ok(Arc::clone(config)),
            _ => Err(TlsFailure::NoTrustStore),
        }
    }

    fn load(&self) -> Option<ClientConfig> {
        let mut roots = RootCertStore::empty();
        let system = if Path::new(SYSTEM_CA_BUNDLE).is_file() {
            add_pem(&mut roots, Path::new(SYSTEM_CA_BUNDLE))
        } else {
            add_pem_dir(&mut roots, Path::new(SYSTEM_CA_DIR))
        };
        if let Err(e) = system {
            warn!("https mirrors: cannot read the system's CA certificates: {e}");
        }
        if let Some(extra) = &self.extra {
            let added = if extra.is_dir() {
                add_pem_dir(&mut roots, extra)
            } else {
                add_pem(&mut roots, extra)
            };
            match added {
                Ok(0) => warn!("CaFile {}: no CA certificate in it", extra.display()),
                Ok(n) => debug!("CaFile {}: {n} CA certificates", extra.display()),
                Err(e) => warn!("CaFile {}: {e}", extra.display()),
            }
        }
        if roots.is_empty() {
            warn!(
                "https mirrors: no trusted CA certificate ({SYSTEM_CA_BUNDLE} or \
                 {SYSTEM_CA_DIR}): every https:// mirror fails"
            );
            return None;
        }
        debug!("https mirrors: {} trusted CA certificates", roots.len());
        let provider = Arc::new(rustls::crypto::CryptoProvider {
            cipher_suites: cipher_suites(aes_in_hardware()),
            ..rustls::crypto::ring::default_provider()
        });
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Some(config)
    }
}

/// The suites offered, best first (servers that honour the client's order pick the first they
/// share), as BoringSSL orders them: with AES in hardware, AES-128-GCM before AES-256-GCM (4
/// fewer rounds a block; the packages are public and checked by their SHA-256 anyway), then
/// ChaCha20-Poly1305; without (a Raspberry Pi 4 has no AES instructions), ChaCha20-Poly1305
/// first, which needs none to be fast and constant-time. Every suite is one of rustls' safe
/// defaults.
fn cipher_suites(aes_in_hardware: bool) -> Vec<rustls::SupportedCipherSuite> {
    use rustls::crypto::ring::cipher_suite as s;
    let aes13 = [s::TLS13_AES_128_GCM_SHA256, s::TLS13_AES_256_GCM_SHA384];
    let chacha13 = [s::TLS13_CHACHA20_POLY1305_SHA256];
    let aes12 = [
        s::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        s::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        s::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        s::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ];
    let chacha12 = [
        s::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        s::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    let mut suites = Vec::new();
    for (aes, chacha) in [(&aes13[..], &chacha13[..]), (&aes12[..], &chacha12[..])] {
        if aes_in_hardware {
            suites.extend_from_slice(aes);
            suites.extend_from_slice(chacha);
        } else {
            suites.extend_from_slice(chacha);
            suites.extend_from_slice(aes);
        }
    }
    suites
}

/// Whether this CPU has AES (and carry-less multiply) instructions, which AES-GCM needs to be
/// fast and constant-time without tables.
fn aes_in_hardware() -> bool {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Adds the certificates of one PEM file; how many were taken. Other PEM
/// sections (keys, CRLs) are skipped; certificates rustls refuses as trust
/// anchors are skipped too.
fn add_pem(roots: &mut RootCertStore, path: &Path) -> io::Result<usize> {
    let file = std::fs::File::open(path)?;
    let mut text = Vec::new();
    file.take(MAX_PEM_FILE + 1).read_to_end(&mut text)?;
    if text.len() as u64 > MAX_PEM_FILE {
        return Err(io::Error::new(ErrorKind::InvalidData, "larger than 16 MiB"));
    }
    let certs = CertificateDer::pem_slice_iter(&text).filter_map(Result::ok);
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    Ok(added)
}

/// Adds the certificates of every `*.pem` and `*.crt` file of a folder
/// (hash links such as `5c44d531.0` point to the same files).
fn add_pem_dir(roots: &mut RootCertStore, dir: &Path) -> io::Result<usize> {
    let mut added = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pem" || x == "crt"))
        .take(MAX_PEM_FILES)
        .collect();
    files.sort();
    for file in files {
        if file.is_file() {
            added += add_pem(roots, &file).unwrap_or(0);
        }
    }
    Ok(added)
}

/// The TLS side of one source connection: a client session for one server
/// name, fed from and flushed to the connection's socket.
pub struct TlsSession {
    conn: ClientConnection,
    /// The server name it was made for: a kept connection carries only
    /// requests for the same name.
    name: String,
    /// Why the last read or write failed, when TLS said why.
    failure: Option<TlsFailure>,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("name", &self.name)
            .field("handshaking", &self.conn.is_handshaking())
            .finish()
    }
}

impl TlsSession {
    /// A session for `host` (a DNS name, or an IP address checked against
    /// the certificate's IP SANs); nothing is sent before the first flush.
    pub fn new(config: Arc<ClientConfig>, host: &str) -> Result<TlsSession, TlsFailure> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| TlsFailure::BadServerName)?;
        let conn = ClientConnection::new(config, name).map_err(|e| TlsFailure::from(&e))?;
        Ok(TlsSession {
            conn,
            name: host.to_owned(),
            failure: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Why the last read or write failed, if TLS said why.
    pub fn failure(&self) -> Option<TlsFailure> {
        self.failure
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Sends what TLS has to send (handshake, records, alerts) until done or
    /// the socket would block. `Done(0)`-like success is `WouldBlock` only
    /// when bytes are still waiting.
    pub fn flush(&mut self, socket: &mut impl Write) -> Io {
        let mut sent = 0;
        while self.conn.wants_write() {
            match self.conn.write_tls(socket) {
                Ok(0) => return Io::Closed,
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Io::WouldBlock,
                Err(e) => return Io::Error(e),
            }
        }
        Io::Done(sent)
    }

    /// Takes plaintext for the server (buffered until the handshake is done)
    /// and sends what it can. `Done(n)`: `n` bytes taken.
    pub fn write(&mut self, socket: &mut impl Write, buf: &[u8]) -> Io {
        let taken = match self.conn.writer().write(buf) {
            Ok(n) => n,
            Err(e) => return Io::Error(e),
        };
        match self.flush(socket) {
            Io::Closed | Io::Error(_) => return Io::Closed,
            Io::Done(_) | Io::WouldBlock => {}
        }
        if taken == 0 {
            Io::WouldBlock
        } else {
            Io::Done(taken)
        }
    }

    /// Reads plaintext from the server into `buf`, reading and decrypting
    /// records from the socket as needed (and sending what the handshake
    /// answers). `Closed` after the server's `close_notify`; a close without
    /// it, or any TLS error, records [`Self::failure`].
    ///
    /// Fills `buf` with as many records as the socket holds, not one (a
    /// record is at most 16 KiB): the relay then writes to pacman in one call
    /// what took four, which is most of the CPU an https relay spends (the
    /// bench's "https mirror" rows). What ends the filling (would block, the
    /// end, an error) is met again, and returned, by the next call.
    pub fn read(&mut self, socket: &mut (impl Read + Write), buf: &mut [u8]) -> Io {
        let mut filled = 0;
        while filled < buf.len() {
            match self.read_some(socket, &mut buf[filled..]) {
                Io::Done(n) => filled += n,
                _ if filled > 0 => break,
                other => return other,
            }
        }
        Io::Done(filled)
    }

    /// [`Self::read`] of the plaintext of the records here, or of the next
    /// one that arrives.
    fn read_some(&mut self, socket: &mut (impl Read + Write), buf: &mut [u8]) -> Io {
        let mut eof = false;
        loop {
            match self.conn.reader().read(buf) {
                Ok(0) => return Io::Closed,
                Ok(n) => return Io::Done(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if eof {
                        self.failure = Some(TlsFailure::HandshakeCut);
                        return Io::Closed;
                    }
                }
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                    self.failure = Some(if self.conn.is_handshaking() {
                        TlsFailure::HandshakeCut
                    } else {
                        TlsFailure::Truncated
                    });
                    return Io::Closed;
                }
                Err(e) => return Io::Error(e),
            }
            match self.conn.read_tls(socket) {
                Ok(0) => eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Io::WouldBlock,
                Err(e) => return Io::Error(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                let failure = TlsFailure::from(&e);
                self.failure = Some(failure);
                // The alert that tells the server why, if the socket takes it.
                let _ = self.flush(socket);
                return Io::Error(io::Error::new(ErrorKind::InvalidData, e));
            }
            if let Io::Error(e) = self.flush(socket) {
                return Io::Error(e);
            }
        }
    }

    /// Queues `close_notify` (sent by the next flush): the polite end of a
    /// connection that is not kept.
    pub fn close(&mut self, socket: &mut impl Write) {
        self.conn.send_close_notify();
        let _ = self.flush(socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory socket: reads `input` (then would block, or reads end of
    /// file when `eof`), collects what is written.
    struct Wire {
        input: Vec<u8>,
        at: usize,
        eof: bool,
        output: Vec<u8>,
    }

    impl Read for Wire {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.at == self.input.len() {
                return if self.eof {
                    Ok(0)
                } else {
                    Err(ErrorKind::WouldBlock.into())
                };
            }
            let n = buf.len().min(self.input.len() - self.at);
            buf[..n].copy_from_slice(&self.input[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    impl Write for Wire {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn wire(input: &[u8], eof: bool) -> Wire {
        Wire {
            input: input.to_vec(),
            at: 0,
            eof,
            output: Vec::new(),
        }
    }

    /// A configuration with no trust anchor at all: enough to start a
    /// handshake (which could never be trusted).
    fn session(host: &str) -> Result<TlsSession, TlsFailure> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        TlsSession::new(Arc::new(config), host)
    }

    #[test]
    fn a_request_waits_behind_the_client_hello() {
        let mut s = session("mirror.example").unwrap();
        let mut w = wire(b"", false);
        assert!(matches!(
            s.write(&mut w, b"GET / HTTP/1.1\r\n\r\n"),
            Io::Done(18)
        ));
        // A handshake record (22), never the plaintext.
        assert_eq!(w.output.first(), Some(&22));
        assert!(!w.output.windows(3).any(|x| x == b"GET"));
        assert!(s.is_handshaking());
        assert!(matches!(s.read(&mut w, &mut [0; 64]), Io::WouldBlock));
        assert_eq!(s.failure(), None);
    }

    #[test]
    fn a_server_that_closes_during_the_handshake_is_named() {
        let mut s = session("mirror.example").unwrap();
        let mut w = wire(b"", true);
        let _ = s.write(&mut w, b"GET / HTTP/1.1\r\n\r\n");
        assert!(matches!(s.read(&mut w, &mut [0; 64]), Io::Closed));
        assert_eq!(s.failure(), Some(TlsFailure::HandshakeCut));
    }

    #[test]
    fn a_plain_http_answer_is_a_protocol_error_not_a_panic() {
        let mut s = session("mirror.example").unwrap();
        let mut w = wire(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
            true,
        );
        let _ = s.write(&mut w, b"GET / HTTP/1.1\r\n\r\n");
        assert!(matches!(s.read(&mut w, &mut [0; 64]), Io::Error(_)));
        assert_eq!(s.failure(), Some(TlsFailure::Protocol));
    }

    #[test]
    fn an_alert_from_the_server_is_named() {
        let mut s = session("mirror.example").unwrap();
        // A fatal handshake_failure alert (40), TLS 1.2 record framing.
        let mut w = wire(&[21, 3, 3, 0, 2, 2, 40], false);
        let _ = s.write(&mut w, b"GET / HTTP/1.1\r\n\r\n");
        assert!(matches!(s.read(&mut w, &mut [0; 64]), Io::Error(_)));
        assert_eq!(s.failure(), Some(TlsFailure::Alert(40)));
    }

    #[test]
    fn every_default_suite_is_offered_aes_first_only_with_aes_in_hardware() {
        let default: Vec<_> = rustls::crypto::ring::DEFAULT_CIPHER_SUITES
            .iter()
            .map(|s| s.suite())
            .collect();
        for hw in [true, false] {
            let ours: Vec<_> = cipher_suites(hw).iter().map(|s| s.suite()).collect();
            assert_eq!(ours.len(), default.len());
            assert!(default.iter().all(|s| ours.contains(s)), "{ours:?}");
            let first = format!("{:?}", ours[0]);
            let want = if hw { "AES_128_GCM" } else { "CHACHA20" };
            assert!(
                first.contains(want),
                "{first} first, with AES in hardware: {hw}"
            );
            // TLS 1.3 suites before TLS 1.2 ones.
            assert!(format!("{:?}", ours[2]).starts_with("TLS13"));
            assert!(!format!("{:?}", ours[3]).starts_with("TLS13"));
        }
    }

    #[test]
    fn server_names_are_dns_names_or_ip_addresses() {
        assert!(session("mirror.example").is_ok());
        assert!(session("192.0.2.1").is_ok());
        assert!(session("2001:db8::1").is_ok());
        assert_eq!(session("bad name").err(), Some(TlsFailure::BadServerName));
        assert_eq!(session("").err(), Some(TlsFailure::BadServerName));
    }

    #[test]
    fn certificate_errors_are_named_as_curl_would() {
        let cert = |c| TlsFailure::from(&rustls::Error::InvalidCertificate(c));
        assert_eq!(
            cert(CertificateError::NotValidForName),
            TlsFailure::WrongName
        );
        assert_eq!(
            cert(CertificateError::UnknownIssuer),
            TlsFailure::UnknownIssuer
        );
        assert_eq!(cert(CertificateError::Expired), TlsFailure::Expired);
        assert_eq!(
            cert(CertificateError::BadSignature),
            TlsFailure::BadCertificate
        );
        assert_eq!(
            TlsFailure::WrongName.to_string(),
            "certificate not valid for this host name"
        );
    }

    #[test]
    fn pem_files_give_their_certificates_and_skip_the_rest() {
        let dir = std::env::temp_dir().join(format!("flocon-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, b"-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
        let mut roots = RootCertStore::empty();
        assert_eq!(add_pem(&mut roots, &garbage).unwrap(), 0);
        assert!(add_pem(&mut roots, &dir.join("missing.pem")).is_err());
        assert_eq!(add_pem_dir(&mut roots, &dir).unwrap(), 0);
        assert!(roots.is_empty());
        let mut trust = TlsTrust {
            extra: Some(garbage),
            config: Loaded::Failed,
        };
        assert_eq!(trust.config().err(), Some(TlsFailure::NoTrustStore));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
