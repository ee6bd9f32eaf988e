//! flocon's own config file (`/etc/flocon.conf`): pacman.conf-style `Key = Value` lines
//! parsed from a string into a `FileSettings`. Pure: it never reads the file (the loader
//! in `mod.rs` does) and never reads pacman.conf (see `pacman_conf`).

use super::UsageError;
use super::options::{FileSettings, Setting, shown};

/// Longest line accepted.
const MAX_LINE_BYTES: usize = 4096;

/// Parses the text of the config file called `name` (used in messages).
///
/// Lines are `Key = Value`, or a bare `Debug`. Keys are those of `--help`, matched
/// without regard to ASCII case. `#` starts a comment at the start of a line or after
/// whitespace (so `http://host/#x` keeps its `#`). Blank lines and section headers such
/// as `[options]` are skipped. Repeated `CacheDir`, `Upstream` and `Interface` lines add
/// to their list; other repeated keys: the last one wins.
///
/// Unknown keys give a warning `"<name>:<line>: unknown key 'Foo', ignored"`; a bad value
/// or a malformed line is an error naming the file, the line and the key.
pub fn parse_config_file(
    name: &str,
    text: &str,
) -> Result<(FileSettings, Vec<String>), UsageError> {
    let mut settings = FileSettings::default();
    let mut warnings = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let at = format!("{name}:{}", index + 1);
        if raw.len() > MAX_LINE_BYTES {
            return Err(UsageError::new(format!(
                "{at}: line longer than {MAX_LINE_BYTES} bytes"
            )));
        }
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            if line.ends_with(']') {
                continue;
            }
            return Err(UsageError::new(format!("{at}: malformed section header")));
        }
        let (key, value) = match line.split_once('=') {
            Some((key, value)) => (key.trim(), Some(value.trim())),
            None => (line, None),
        };
        if key.is_empty() {
            return Err(UsageError::new(format!("{at}: missing key before '='")));
        }
        let Some(setting) = Setting::from_key(key) else {
            warnings.push(format!("{at}: unknown key '{}', ignored", shown(key)));
            continue;
        };
        let value = match value {
            None if setting == Setting::Debug => "yes",
            Some(value) if !value.is_empty() => value,
            _ => {
                return Err(UsageError::new(format!(
                    "{at}: missing value for {}",
                    setting.key()
                )));
            }
        };
        settings
            .set(setting, value)
            .map_err(|e| UsageError::new(format!("{at}: {}", e.message(setting.key(), value))))?;
    }
    Ok((settings, warnings))
}

/// The line up to a `#` that starts it or follows whitespace.
fn strip_comment(line: &str) -> &str {
    let mut previous_is_space = true;
    for (i, c) in line.char_indices() {
        if c == '#' && previous_is_space {
            return &line[..i];
        }
        previous_is_space = c.is_whitespace();
    }
    line
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    const NAME: &str = "/etc/flocon.conf";

    fn parse(text: &str) -> Result<(FileSettings, Vec<String>), String> {
        parse_config_file(NAME, text).map_err(|e| e.to_string())
    }

    #[test]
    fn every_key() {
        let text = "\
# flocon config
[options]
Debug = no
CacheDir = /var/cache/pacman/pkg
CacheDir = /srv/pkg   # second cache
PacmanConf = /etc/pacman-test.conf
Upstream = https://mirror.example/$repo/os/$arch#frag
Port = 2000
LocalPort = 2001
Group = 239.1.2.3
Interface = eth0
Interface = br0
AnnounceInterval = 30
LookupTimeout = 400
MaxConnections = 10
Architecture = auto
Distro = arch

";
        let (s, warnings) = parse(text).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let want = FileSettings {
            debug: Some(false),
            cache_dirs: Some(vec![
                PathBuf::from("/var/cache/pacman/pkg"),
                PathBuf::from("/srv/pkg"),
            ]),
            pacman_conf: Some("/etc/pacman-test.conf".into()),
            upstreams: Some(vec!["https://mirror.example/$repo/os/$arch#frag".into()]),
            port: Some(2000),
            local_port: Some(2001),
            group: Some(Ipv4Addr::new(239, 1, 2, 3)),
            interfaces: Some(vec!["eth0".into(), "br0".into()]),
            announce_interval: Some(Duration::from_secs(30)),
            lookup_timeout: Some(Duration::from_millis(400)),
            max_connections: Some(10),
            architecture: Some("auto".into()),
            distro: Some("arch".into()),
            ban_time: None,
            https: None,
            ca_file: None,
            spool_dir: None,
            spool_size: None,
            spool_keep: None,
        };
        assert_eq!(s, want);
    }

    #[test]
    fn debug_forms() {
        let cases: &[(&str, Option<bool>)] = &[
            ("Debug", Some(true)),
            ("Debug = true", Some(true)),
            ("Debug = yes", Some(true)),
            ("Debug = 1", Some(true)),
            ("Debug = YES", Some(true)),
            ("Debug = false", Some(false)),
            ("Debug = no", Some(false)),
            ("Debug = 0", Some(false)),
            ("debug", Some(true)),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).unwrap().0.debug, *want, "{text}");
        }
    }

    #[test]
    fn keys_are_case_insensitive_and_last_wins() {
        let (s, _) = parse("port = 1\nPORT = 2\nlocalport=3\n").unwrap();
        assert_eq!(s.port, Some(2));
        assert_eq!(s.local_port, Some(3));
    }

    #[test]
    fn unknown_keys_warn_with_file_and_line() {
        let (s, warnings) = parse("Port = 5\n\n# c\nFoo = bar\nConfig = /x\nPort=6\n").unwrap();
        assert_eq!(s.port, Some(6));
        assert_eq!(
            warnings,
            vec![
                "/etc/flocon.conf:4: unknown key 'Foo', ignored".to_owned(),
                "/etc/flocon.conf:5: unknown key 'Config', ignored".to_owned(),
            ]
        );
    }

    #[test]
    fn bad_lines_are_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "Port = abc",
                "/etc/flocon.conf:1: invalid value 'abc' for Port: expected a number from 1 to 65535",
            ),
            (
                "\nLocalPort = 0",
                "/etc/flocon.conf:2: invalid value '0' for LocalPort: expected a number from 1 to 65535",
            ),
            ("Port", "/etc/flocon.conf:1: missing value for Port"),
            ("Port =", "/etc/flocon.conf:1: missing value for Port"),
            (
                "Debug = maybe",
                "/etc/flocon.conf:1: invalid value 'maybe' for Debug: expected true, false, yes, no, 1 or 0",
            ),
            ("Debug =", "/etc/flocon.conf:1: missing value for Debug"),
            ("= 5", "/etc/flocon.conf:1: missing key before '='"),
            ("[options", "/etc/flocon.conf:1: malformed section header"),
            (
                "Group = 10.0.0.1",
                "/etc/flocon.conf:1: invalid value '10.0.0.1' for Group: expected an IPv4 multicast address (224.0.0.0 to 239.255.255.255)",
            ),
            (
                "CacheDir = pkg",
                "/etc/flocon.conf:1: invalid value 'pkg' for CacheDir: expected an absolute directory path",
            ),
            (
                "Upstream = mirror/$repo",
                "/etc/flocon.conf:1: invalid value 'mirror/$repo' for Upstream: expected an http:// or https:// URL template such as https://mirror.example/$repo/os/$arch (it must start with http:// or https://)",
            ),
            (
                "AnnounceInterval = 0",
                "/etc/flocon.conf:1: invalid value '0' for AnnounceInterval: expected a number of seconds from 1 to 3600",
            ),
            (
                "LookupTimeout = 6000",
                "/etc/flocon.conf:1: invalid value '6000' for LookupTimeout: expected a number of milliseconds from 10 to 5000",
            ),
            (
                "MaxConnections = x",
                "/etc/flocon.conf:1: invalid value 'x' for MaxConnections: expected a number from 1 to 16384",
            ),
            (
                "interface = a b",
                "/etc/flocon.conf:1: invalid value 'a b' for Interface: expected a network interface name (1 to 15 characters, no spaces or '/')",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).err().as_deref(), Some(*want), "{text}");
        }
        let long = format!("Port = {}", "1".repeat(5000));
        assert_eq!(
            parse(&long).err().as_deref(),
            Some("/etc/flocon.conf:1: line longer than 4096 bytes")
        );
    }

    #[test]
    fn comments() {
        let cases: &[(&str, &str)] = &[
            ("a # b", "a "),
            ("# b", ""),
            ("  # b", "  "),
            ("http://h/#x", "http://h/#x"),
            ("a\t#b", "a\t"),
            ("", ""),
        ];
        for (line, want) in cases {
            assert_eq!(strip_comment(line), *want, "{line:?}");
        }
    }
}
