//! The few URLs flocon fetches itself: `http://host[:port]/path`.
//!
//! Owns splitting an upstream mirror URL into what a request needs (host to
//! connect to, port, `Host` header, path) and joining a file name onto it. It
//! does not resolve names and does not speak TLS: `https://` URLs are only
//! recognised, so that the relay can redirect pacman to them.

use super::range::strip_prefix_ignore_case;

/// A parsed absolute URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    /// Host as written, without brackets for IPv6 literals.
    pub host: String,
    pub port: u16,
    /// `Host` header value (host plus a non-default port).
    pub authority: String,
    /// Starts with `/`; no query or fragment kept.
    pub path: String,
}

/// Longest URL accepted.
pub const MAX_URL: usize = 2048;

/// Parses `http://` and `https://` URLs; `None` for anything else (other
/// schemes, user info, bad ports, empty hosts, spaces or control characters).
pub fn parse(url: &str) -> Option<Url> {
    // ASCII only: host names on the wire are ASCII (IDNA), paths are
    // percent-encoded.
    if url.len() > MAX_URL || url.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        return None;
    }
    let (https, rest) = if let Some(rest) = strip_prefix_ignore_case(url, "http://") {
        (false, rest)
    } else {
        (true, strip_prefix_ignore_case(url, "https://")?)
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let host_byte = |b: u8| b.is_ascii_alphanumeric() || b"-._:".contains(&b);
    if host.is_empty() || !host.bytes().all(host_byte) {
        return None;
    }
    let port = match port {
        None => {
            if https {
                443
            } else {
                80
            }
        }
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            match p.parse::<u16>() {
                Ok(0) | Err(_) => return None,
                Ok(p) => p,
            }
        }
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path = if path.is_empty() { "/" } else { path };
    let parsed = Url {
        https,
        host: host.to_owned(),
        port,
        authority: authority.to_owned(),
        path: path.to_owned(),
    };
    // What is accepted reads back the same from its text (found by the `url`
    // fuzz target: `http://host` gains a `/` and could pass the limit).
    (parsed.to_text().len() <= MAX_URL).then_some(parsed)
}

impl Url {
    /// The URL of `file` inside this directory URL.
    pub fn join(&self, file: &str) -> Url {
        let mut url = self.clone();
        if !url.path.ends_with('/') {
            url.path.push('/');
        }
        url.path.push_str(file);
        url
    }

    /// A `Location` value resolved against this URL (RFC 3986, section 5.2): absolute `http(s)`
    /// URLs as they are, `//host/path` with this scheme, `/path` on this host, and relative
    /// paths against this URL's directory, with `.` and `..` segments removed. `None` for
    /// anything that is not an `http(s)` URL in the end (another scheme, a space, a control
    /// character, no host, too long).
    pub fn resolve(&self, reference: &str) -> Option<String> {
        let scheme = if self.https { "https" } else { "http" };
        let lower = reference.get(..8).unwrap_or(reference).to_ascii_lowercase();
        let text = if lower.starts_with("http://") || lower.starts_with("https://") {
            reference.to_owned()
        } else if reference.starts_with("//") {
            format!("{scheme}:{reference}")
        } else if reference.contains(':')
            && reference
                .split(['/', '?', '#'])
                .next()
                .is_some_and(|first| first.contains(':'))
        {
            return None; // another scheme (`ftp:`, `file:`, `javascript:`)
        } else {
            // The query and fragment of a relative reference stay with it.
            let cut = reference.find(['?', '#']).unwrap_or(reference.len());
            let (path, tail) = reference.split_at(cut);
            let merged = if path.is_empty() {
                self.path.clone()
            } else if path.starts_with('/') {
                path.to_owned()
            } else {
                let dir = &self.path[..self.path.rfind('/').map_or(0, |i| i + 1)];
                format!("{dir}{path}")
            };
            format!(
                "{scheme}://{}{}{tail}",
                self.authority,
                remove_dot_segments(&merged)
            )
        };
        parse(&text).map(|_| text)
    }

    pub fn to_text(&self) -> String {
        format!(
            "{}://{}{}",
            if self.https { "https" } else { "http" },
            self.authority,
            self.path
        )
    }
}

/// RFC 3986's `remove_dot_segments` for an absolute path: `.` and `..` segments go, and a
/// `..` never climbs above the root.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_upstream_url() {
        let base =
            parse("https://mirror.example:8443/arch/core/os/x86_64/zstd-1.5-1-x86_64.pkg.tar.zst")
                .expect("base");
        let cases = [
            ("https://other.example/x", Some("https://other.example/x")),
            ("HTTP://other.example/x", Some("HTTP://other.example/x")),
            ("//cdn.example/p/f", Some("https://cdn.example/p/f")),
            ("/pool/f", Some("https://mirror.example:8443/pool/f")),
            (
                "f2",
                Some("https://mirror.example:8443/arch/core/os/x86_64/f2"),
            ),
            (
                "../../any/f",
                Some("https://mirror.example:8443/arch/core/any/f"),
            ),
            (
                "./f?sig=1",
                Some("https://mirror.example:8443/arch/core/os/x86_64/f?sig=1"),
            ),
            (
                "../../../../../../etc",
                Some("https://mirror.example:8443/etc"),
            ),
            (
                "a/./b/../c",
                Some("https://mirror.example:8443/arch/core/os/x86_64/a/c"),
            ),
            ("ftp://mirror.example/f", None),
            ("javascript:alert(1)", None),
            ("/a b", None),
            ("/a\x01", None),
        ];
        for (reference, want) in cases {
            assert_eq!(base.resolve(reference).as_deref(), want, "{reference:?}");
        }
        let plain = parse("http://m.example/repo/os/x86_64/f").expect("base");
        assert_eq!(
            plain.resolve("//cdn.example/f").as_deref(),
            Some("http://cdn.example/f")
        );
        assert_eq!(
            plain.resolve("").as_deref(),
            Some("http://m.example/repo/os/x86_64/f")
        );
    }

    #[test]
    fn dot_segments() {
        assert_eq!(remove_dot_segments("/a/b/c/./../../g"), "/a/g");
        assert_eq!(remove_dot_segments("/../a"), "/a");
        assert_eq!(remove_dot_segments("/a/.."), "/");
        assert_eq!(remove_dot_segments("/a/."), "/a/");
        assert_eq!(remove_dot_segments("/"), "/");
    }

    #[test]
    fn accepted_urls_read_back_from_their_text() {
        // Found by fuzzing: 2048 bytes without a path, which `to_text` completes.
        let long = format!("http://{}", "a".repeat(MAX_URL - 7));
        assert_eq!(long.len(), MAX_URL);
        assert_eq!(parse(&long), None);
        let fits = format!("http://{}/", "a".repeat(MAX_URL - 8));
        let url = parse(&fits).unwrap();
        assert_eq!(parse(&url.to_text()), Some(url));
    }

    #[test]
    fn url_table() {
        let u = parse("http://mirror.example:8080/arch/core/os/x86_64").unwrap();
        assert_eq!(
            (
                u.https,
                u.host.as_str(),
                u.port,
                u.authority.as_str(),
                u.path.as_str()
            ),
            (
                false,
                "mirror.example",
                8080,
                "mirror.example:8080",
                "/arch/core/os/x86_64"
            )
        );
        let u = parse("https://m.example").unwrap();
        assert_eq!((u.https, u.port, u.path.as_str()), (true, 443, "/"));
        let u = parse("HTTP://[::1]:19433/x?y#z").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 19433, "/x")
        );
        assert_eq!(
            u.join("a-1-1-any.pkg.tar.zst").path,
            "/x/a-1-1-any.pkg.tar.zst"
        );
        assert_eq!(
            parse("http://h/d/").unwrap().join("f").to_text(),
            "http://h/d/f"
        );
        for bad in [
            "ftp://h/",
            "http://",
            "http:///x",
            "http://u@h/",
            "http://h:0/",
            "http://h:99999/",
            "http://h:/",
            "http://h:1a/",
            "http://[::1/",
            "http://[zz]/",
            "http://[::1]x/",
            "http://h/a b",
            "http://h/\n",
            "file:///etc",
            "http://h\u{e9}te/x",
            "http://h\u{0}/",
            "http://a b/",
            "http://[::1]x]/",
            "",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
