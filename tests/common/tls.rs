//! A certificate authority made by the test itself with the `openssl` command line (Debian's
//! `openssl`, in the `[tests]` list): a CA certificate to trust for one run (`--ca-file`), and
//! server certificates it signs for given DNS names and IP addresses, for nginx. Short-lived
//! (2 days), EC P-256, in a temporary folder removed on drop.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::{TempDir, run_ok};

const OPENSSL_TIMEOUT: Duration = Duration::from_secs(30);

pub struct TestCa {
    dir: TempDir,
    /// The CA's certificate (PEM), to trust.
    pub cert: PathBuf,
    key: PathBuf,
}

/// A server certificate and its key (PEM files), for nginx.
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ServerCert {
    /// As [`super::mirror::MirrorOptions::tls`] takes it.
    pub fn files(&self) -> Option<(PathBuf, PathBuf)> {
        Some((self.cert.clone(), self.key.clone()))
    }
}

fn openssl(args: &[&str]) {
    let mut cmd = Command::new("openssl");
    cmd.args(args);
    run_ok(cmd, OPENSSL_TIMEOUT);
}

impl TestCa {
    /// A new CA named `name`.
    #[track_caller]
    pub fn new(name: &str) -> TestCa {
        let dir = TempDir::new("test-ca");
        let cert = dir.join("ca.pem");
        let key = dir.join("ca.key");
        let subject = format!("/CN={name}");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ]);
        TestCa { dir, cert, key }
    }

    /// A server certificate for `names`: `DNS:host` and `IP:addr` entries of its
    /// subjectAltName, e.g. `["DNS:localhost", "IP:127.0.0.1"]`.
    #[track_caller]
    pub fn issue(&self, label: &str, names: &[&str]) -> ServerCert {
        let key = self.dir.join(format!("{label}.key"));
        let csr = self.dir.join(format!("{label}.csr"));
        let cert = self.dir.join(format!("{label}.pem"));
        let ext = self.dir.join(format!("{label}.ext"));
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
                names.join(",")
            ),
        )
        .unwrap();
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={label}"),
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            csr.to_str().unwrap(),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            self.cert.to_str().unwrap(),
            "-CAkey",
            self.key.to_str().unwrap(),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            ext.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ]);
        ServerCert { cert, key }
    }
}
