//! The `Authorization` field of a request to a peer's file server when a secret is set:
//!
//! ```text
//! Authorization: flocon-hmac t=<seconds since the Unix epoch>,mac=<64 lowercase hex digits>
//! mac = HMAC-SHA256(secret, "flocon-http\n" || METHOD || "\n" || request target || "\n" || t)
//! ```
//!
//! `t` in decimal ASCII as sent, the request target exactly as sent (still percent-encoded).
//! The server answers 403 to a request without the field, with a malformed one, a wrong MAC,
//! or `t` further than [`WINDOW`] from its clock.

use std::fmt::{self, Write as _};

use super::{Secret, WINDOW};

/// The authentication scheme's name.
pub const SCHEME: &str = "flocon-hmac";
/// What every MAC input starts with (never the start of a datagram envelope).
const PREFIX: &[u8] = b"flocon-http\n";
/// Longest field value looked at.
const MAX_FIELD: usize = 128;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRefused {
    /// No `Authorization` field.
    Missing,
    /// Not `flocon-hmac t=..,mac=..`.
    Malformed,
    /// The MAC does not match (another secret, or another request).
    BadMac,
    /// `t` is further than [`WINDOW`] from our clock.
    Stale,
}

impl fmt::Display for HttpRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HttpRefused::Missing => "no Authorization (a host without the secret?)",
            HttpRefused::Malformed => "malformed Authorization",
            HttpRefused::BadMac => "wrong MAC (another secret?)",
            HttpRefused::Stale => "time outside the window (clocks apart?)",
        })
    }
}

fn input_tag(secret: &Secret, method: &str, target: &str, t: &str) -> [u8; 32] {
    secret.tag(&[
        PREFIX,
        method.as_bytes(),
        b"\n",
        target.as_bytes(),
        b"\n",
        t.as_bytes(),
    ])
}

/// The field value for `method target` at `unix_secs`.
pub fn authorization(secret: &Secret, method: &str, target: &str, unix_secs: u64) -> String {
    let t = unix_secs.to_string();
    let tag = input_tag(secret, method, target, &t);
    let mut value = format!("{SCHEME} t={t},mac=");
    for b in tag {
        let _ = write!(value, "{b:02x}");
    }
    value
}

/// Checks the `Authorization` field (`None`: absent) of `method target`, at `unix_secs`.
pub fn check(
    secret: &Secret,
    field: Option<&str>,
    method: &str,
    target: &str,
    unix_secs: u64,
) -> Result<(), HttpRefused> {
    let field = field.ok_or(HttpRefused::Missing)?.trim();
    if field.len() > MAX_FIELD {
        return Err(HttpRefused::Malformed);
    }
    let (scheme, params) = field.split_once(' ').ok_or(HttpRefused::Malformed)?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return Err(HttpRefused::Malformed);
    }
    let (mut t, mut mac) = (None, None);
    for param in params.split(',') {
        match param.trim().split_once('=') {
            Some(("t", v)) if t.is_none() => t = Some(v),
            Some(("mac", v)) if mac.is_none() => mac = Some(v),
            _ => return Err(HttpRefused::Malformed),
        }
    }
    let (Some(t), Some(mac)) = (t, mac) else {
        return Err(HttpRefused::Malformed);
    };
    let secs = (!t.is_empty() && t.len() <= 19 && t.bytes().all(|b| b.is_ascii_digit()))
        .then(|| t.parse::<u64>().ok())
        .flatten()
        .ok_or(HttpRefused::Malformed)?;
    let tag = decode_hex(mac).ok_or(HttpRefused::Malformed)?;
    let ok = secret.verify(
        &[
            PREFIX,
            method.as_bytes(),
            b"\n",
            target.as_bytes(),
            b"\n",
            t.as_bytes(),
        ],
        &tag,
    );
    if !ok {
        return Err(HttpRefused::BadMac);
    }
    if secs.abs_diff(unix_secs) > WINDOW.as_secs() {
        return Err(HttpRefused::Stale);
    }
    Ok(())
}

/// 64 hex digits to 32 bytes.
fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn secret(b: u8) -> Secret {
        Secret::from_bytes(&[b; 20]).unwrap()
    }

    #[test]
    fn right_secret_passes_anything_else_is_refused() {
        let s = secret(1);
        let a = authorization(&s, "GET", "/a%2Bb-1-1-any.pkg.tar.zst", NOW);
        assert!(a.starts_with("flocon-hmac t=1800000000,mac="));
        assert_eq!(a.len(), "flocon-hmac t=1800000000,mac=".len() + 64);
        let target = "/a%2Bb-1-1-any.pkg.tar.zst";
        assert_eq!(check(&s, Some(&a), "GET", target, NOW), Ok(()));
        assert_eq!(check(&s, Some(&a), "GET", target, NOW + 30), Ok(()));
        assert_eq!(check(&s, Some(&a), "GET", target, NOW - 30), Ok(()));
        assert_eq!(
            check(&s, Some(&a), "GET", target, NOW + 31),
            Err(HttpRefused::Stale)
        );
        assert_eq!(
            check(&s, None, "GET", target, NOW),
            Err(HttpRefused::Missing)
        );
        assert_eq!(
            check(&secret(2), Some(&a), "GET", target, NOW),
            Err(HttpRefused::BadMac)
        );
        assert_eq!(
            check(&s, Some(&a), "HEAD", target, NOW),
            Err(HttpRefused::BadMac)
        );
        assert_eq!(
            check(&s, Some(&a), "GET", "/other", NOW),
            Err(HttpRefused::BadMac)
        );
        // Another time in the field with the same MAC.
        let moved = a.replace("t=1800000000", "t=1800000001");
        assert_eq!(
            check(&s, Some(&moved), "GET", target, NOW),
            Err(HttpRefused::BadMac)
        );
        let upper = a
            .to_uppercase()
            .replace("FLOCON-HMAC T=", "flocon-hmac t=")
            .replace(",MAC=", ",mac=");
        assert_eq!(
            check(&s, Some(&upper), "GET", target, NOW),
            Ok(()),
            "hex in any case"
        );
        for bad in [
            "",
            "Basic abc",
            "flocon-hmac",
            "flocon-hmac t=1",
            "flocon-hmac mac=00",
            "flocon-hmac t=x,mac=00",
            "flocon-hmac t=1,t=2,mac=00",
            "flocon-hmac t=-1,mac=0000000000000000000000000000000000000000000000000000000000000000",
            "flocon-hmac t=1,mac=zz00000000000000000000000000000000000000000000000000000000000000",
            "flocon-hmac t=1,mac=000",
        ] {
            assert_eq!(
                check(&s, Some(bad), "GET", target, NOW),
                Err(HttpRefused::Malformed),
                "{bad:?}"
            );
        }
        let long = format!("{a}{}", " ".repeat(200) + "x");
        assert_eq!(
            check(&s, Some(&long), "GET", target, NOW),
            Err(HttpRefused::Malformed)
        );
    }
}
