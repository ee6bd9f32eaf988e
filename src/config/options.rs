//! The settings that both the command line and the config file can give: their names
//! (`--cache-dir` and `CacheDir`), their defaults, how one value is checked, and
//! `FileSettings`, one layer of given values. It owns neither the reading of the command
//! line or of a file (see `command_line` and `config_file`) nor the final merge with
//! pacman.conf and the host (see the loader in `mod.rs`).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use super::host::{valid_architecture, valid_distro};
use super::pacman_conf::validate_template;

/// Config file read when `-c` is not given; skipped silently if it does not exist.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/flocon.conf";
/// pacman configuration read when `PacmanConf` is not given.
pub const DEFAULT_PACMAN_CONF: &str = "/etc/pacman.conf";
/// Package cache used when neither flocon nor pacman.conf name one (pacman's default).
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/pacman/pkg";
/// Peer port, TCP and UDP.
pub const DEFAULT_PORT: u16 = 19432;
/// Loopback port that pacman talks to.
pub const DEFAULT_LOCAL_PORT: u16 = 19433;
/// Multicast group of the announcements: administratively scoped (RFC 2365, IPv4 Local
/// Scope 239.255.0.0/16), so routers never forward it off the site.
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 19, 32);
/// Time between two announcements.
pub const DEFAULT_ANNOUNCE_INTERVAL: Duration = Duration::from_secs(60);
/// How long a "who has this file" question waits for peers.
pub const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_millis(250);
/// How long a peer that sent bytes other than its database's is banned.
pub const DEFAULT_BAN_TIME: Duration = Duration::from_secs(3600);
/// What flocon does with an `https://` mirror.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HttpsMode {
    /// Fetches it itself over TLS, like an `http://` one.
    #[default]
    Fetch,
    /// Sends pacman there with a 302 (pacman does the TLS).
    Redirect,
}

/// Connections per listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Most values a repeatable setting (`CacheDir`, `Upstream`, `Interface`) may hold.
pub const MAX_LIST_VALUES: usize = 64;

/// Longest interface name Linux accepts (`IFNAMSIZ` - 1).
const MAX_INTERFACE_NAME: usize = 15;
/// Longest path accepted for a setting.
const MAX_PATH_BYTES: usize = 4096;

/// One setting that both the command line and the config file can give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Setting {
    Debug,
    CacheDir,
    PacmanConf,
    Upstream,
    Port,
    LocalPort,
    Group,
    Interface,
    AnnounceInterval,
    LookupTimeout,
    MaxConnections,
    Architecture,
    Distro,
    BanTime,
    Https,
    CaFile,
    SpoolDir,
    SpoolSize,
    SpoolKeep,
}

impl Setting {
    pub(super) const ALL: [Setting; 19] = [
        Setting::Debug,
        Setting::CacheDir,
        Setting::PacmanConf,
        Setting::Upstream,
        Setting::Port,
        Setting::LocalPort,
        Setting::Group,
        Setting::Interface,
        Setting::AnnounceInterval,
        Setting::LookupTimeout,
        Setting::MaxConnections,
        Setting::Architecture,
        Setting::Distro,
        Setting::BanTime,
        Setting::Https,
        Setting::CaFile,
        Setting::SpoolDir,
        Setting::SpoolSize,
        Setting::SpoolKeep,
    ];

    /// The command line spelling, e.g. `--cache-dir`.
    pub(super) fn long(self) -> &'static str {
        match self {
            Setting::Debug => "--debug",
            Setting::CacheDir => "--cache-dir",
            Setting::PacmanConf => "--pacman-conf",
            Setting::Upstream => "--upstream",
            Setting::Port => "--port",
            Setting::LocalPort => "--local-port",
            Setting::Group => "--group",
            Setting::Interface => "--interface",
            Setting::AnnounceInterval => "--announce-interval",
            Setting::LookupTimeout => "--lookup-timeout",
            Setting::MaxConnections => "--max-connections",
            Setting::Architecture => "--architecture",
            Setting::Distro => "--distro",
            Setting::BanTime => "--ban-time",
            Setting::Https => "--https",
            Setting::CaFile => "--ca-file",
            Setting::SpoolDir => "--spool-dir",
            Setting::SpoolSize => "--spool-size",
            Setting::SpoolKeep => "--spool-keep",
        }
    }

    /// The config file spelling, e.g. `CacheDir`.
    pub(super) fn key(self) -> &'static str {
        match self {
            Setting::Debug => "Debug",
            Setting::CacheDir => "CacheDir",
            Setting::PacmanConf => "PacmanConf",
            Setting::Upstream => "Upstream",
            Setting::Port => "Port",
            Setting::LocalPort => "LocalPort",
            Setting::Group => "Group",
            Setting::Interface => "Interface",
            Setting::AnnounceInterval => "AnnounceInterval",
            Setting::LookupTimeout => "LookupTimeout",
            Setting::MaxConnections => "MaxConnections",
            Setting::Architecture => "Architecture",
            Setting::Distro => "Distro",
            Setting::BanTime => "BanTime",
            Setting::Https => "Https",
            Setting::CaFile => "CaFile",
            Setting::SpoolDir => "SpoolDir",
            Setting::SpoolSize => "SpoolSize",
            Setting::SpoolKeep => "SpoolKeep",
        }
    }

    pub(super) fn from_long(name: &str) -> Option<Setting> {
        Setting::ALL.into_iter().find(|s| s.long() == name)
    }

    /// Config file keys match without regard to ASCII case.
    pub(super) fn from_key(key: &str) -> Option<Setting> {
        Setting::ALL
            .into_iter()
            .find(|s| s.key().eq_ignore_ascii_case(key))
    }
}

/// Why a value was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ValueError {
    /// The value is malformed or out of range; the text says what was expected.
    Invalid(String),
    /// A repeatable setting already holds `MAX_LIST_VALUES` values.
    TooMany,
}

impl ValueError {
    /// One line naming the setting (`name` is `--port` or `Port`) and the value.
    pub(super) fn message(&self, name: &str, value: &str) -> String {
        match self {
            ValueError::Invalid(expected) => {
                format!("invalid value '{}' for {name}: {expected}", shown(value))
            }
            ValueError::TooMany => {
                format!("too many values for {name} (at most {MAX_LIST_VALUES})")
            }
        }
    }
}

/// A value as it may appear inside a one-line message: control characters escaped,
/// at most 120 characters.
pub(super) fn shown(value: &str) -> String {
    let mut out = String::new();
    for (count, c) in value.chars().enumerate() {
        if count == 120 {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The values one layer (the config file, or the command line) gives; `None` means "not
/// given here". Lists hold every value of that layer in order; a list given by an upper
/// layer replaces the lower layer's list as a whole (see `overlay`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileSettings {
    pub debug: Option<bool>,
    pub cache_dirs: Option<Vec<PathBuf>>,
    pub pacman_conf: Option<PathBuf>,
    pub upstreams: Option<Vec<String>>,
    pub port: Option<u16>,
    pub local_port: Option<u16>,
    pub group: Option<Ipv4Addr>,
    pub interfaces: Option<Vec<String>>,
    pub announce_interval: Option<Duration>,
    pub lookup_timeout: Option<Duration>,
    pub max_connections: Option<usize>,
    /// As given, `auto` included (so that the command line can undo a file's value).
    pub architecture: Option<String>,
    pub distro: Option<String>,
    pub ban_time: Option<Duration>,
    pub https: Option<HttpsMode>,
    /// An extra CA certificate file, or a folder of PEM files.
    pub ca_file: Option<PathBuf>,
    /// Where files in flight are spooled for the LAN.
    pub spool_dir: Option<PathBuf>,
    /// The spool's cap in MiB; 0 turns spooling off.
    pub spool_size: Option<u64>,
    /// How long a finished spool file stays shareable.
    pub spool_keep: Option<Duration>,
}

impl FileSettings {
    /// Checks `value` and stores it; repeatable settings append (duplicates are dropped),
    /// the others replace.
    pub(super) fn set(&mut self, setting: Setting, value: &str) -> Result<(), ValueError> {
        match setting {
            Setting::Debug => self.debug = Some(parse_bool(value)?),
            Setting::CacheDir => push_bounded(&mut self.cache_dirs, parse_cache_dir(value)?)?,
            Setting::PacmanConf => self.pacman_conf = Some(parse_file_path(value)?),
            Setting::Upstream => push_bounded(&mut self.upstreams, parse_upstream(value)?)?,
            Setting::Port => self.port = Some(parse_port(value)?),
            Setting::LocalPort => self.local_port = Some(parse_port(value)?),
            Setting::Group => self.group = Some(parse_group(value)?),
            Setting::Interface => push_bounded(&mut self.interfaces, parse_interface(value)?)?,
            Setting::AnnounceInterval => {
                let seconds = parse_number(value, 1, 3600)
                    .ok_or_else(|| invalid("expected a number of seconds from 1 to 3600"))?;
                self.announce_interval = Some(Duration::from_secs(seconds));
            }
            Setting::LookupTimeout => {
                let millis = parse_number(value, 10, 5000)
                    .ok_or_else(|| invalid("expected a number of milliseconds from 10 to 5000"))?;
                self.lookup_timeout = Some(Duration::from_millis(millis));
            }
            Setting::MaxConnections => {
                let n = parse_number(value, 1, 16384)
                    .ok_or_else(|| invalid("expected a number from 1 to 16384"))?;
                self.max_connections = usize::try_from(n).ok();
            }
            Setting::Architecture => {
                if !valid_architecture(value) {
                    return Err(invalid(
                        "expected 'auto' or an architecture name such as x86_64",
                    ));
                }
                self.architecture = Some(value.to_owned());
            }
            Setting::BanTime => {
                let seconds = parse_number(value, 1, 7 * 24 * 3600).ok_or_else(|| {
                    invalid("expected a number of seconds from 1 to 604800 (a week)")
                })?;
                self.ban_time = Some(Duration::from_secs(seconds));
            }
            Setting::Https => {
                self.https = Some(match value.to_ascii_lowercase().as_str() {
                    "fetch" => HttpsMode::Fetch,
                    "redirect" => HttpsMode::Redirect,
                    _ => return Err(invalid("expected fetch or redirect")),
                });
            }
            Setting::CaFile => self.ca_file = Some(parse_file_path(value)?),
            Setting::SpoolDir => {
                let path = parse_file_path(value)?;
                if !path.is_absolute() {
                    return Err(invalid("expected an absolute directory path"));
                }
                self.spool_dir = Some(path);
            }
            Setting::SpoolSize => {
                let mib = parse_number(value, 0, 1 << 20).ok_or_else(|| {
                    invalid("expected a number of MiB from 0 (no spool) to 1048576")
                })?;
                self.spool_size = Some(mib);
            }
            Setting::SpoolKeep => {
                let seconds = parse_number(value, 1, 7 * 24 * 3600).ok_or_else(|| {
                    invalid("expected a number of seconds from 1 to 604800 (a week)")
                })?;
                self.spool_keep = Some(Duration::from_secs(seconds));
            }
            Setting::Distro => {
                if !valid_distro(value) {
                    return Err(invalid(
                        "expected a distribution id such as arch (letters, digits, '.', '_', '-')",
                    ));
                }
                self.distro = Some(value.to_owned());
            }
        }
        Ok(())
    }

    /// `self` with every value that `top` gives replaced by `top`'s (whole lists too).
    pub fn overlay(self, top: FileSettings) -> FileSettings {
        FileSettings {
            debug: top.debug.or(self.debug),
            cache_dirs: top.cache_dirs.or(self.cache_dirs),
            pacman_conf: top.pacman_conf.or(self.pacman_conf),
            upstreams: top.upstreams.or(self.upstreams),
            port: top.port.or(self.port),
            local_port: top.local_port.or(self.local_port),
            group: top.group.or(self.group),
            interfaces: top.interfaces.or(self.interfaces),
            announce_interval: top.announce_interval.or(self.announce_interval),
            lookup_timeout: top.lookup_timeout.or(self.lookup_timeout),
            max_connections: top.max_connections.or(self.max_connections),
            architecture: top.architecture.or(self.architecture),
            distro: top.distro.or(self.distro),
            ban_time: top.ban_time.or(self.ban_time),
            https: top.https.or(self.https),
            ca_file: top.ca_file.or(self.ca_file),
            spool_dir: top.spool_dir.or(self.spool_dir),
            spool_size: top.spool_size.or(self.spool_size),
            spool_keep: top.spool_keep.or(self.spool_keep),
        }
    }
}

fn invalid(expected: &str) -> ValueError {
    ValueError::Invalid(expected.to_owned())
}

fn push_bounded<T: PartialEq>(list: &mut Option<Vec<T>>, value: T) -> Result<(), ValueError> {
    let list = list.get_or_insert_with(Vec::new);
    if list.contains(&value) {
        return Ok(());
    }
    if list.len() >= MAX_LIST_VALUES {
        return Err(ValueError::TooMany);
    }
    list.push(value);
    Ok(())
}

/// A decimal number in `min..=max`, digits only (no sign, no spaces).
pub(super) fn parse_number(value: &str, min: u64, max: u64) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = value.parse().ok()?;
    (min..=max).contains(&n).then_some(n)
}

pub(super) fn parse_bool(value: &str) -> Result<bool, ValueError> {
    const TRUE: [&str; 3] = ["true", "yes", "1"];
    const FALSE: [&str; 3] = ["false", "no", "0"];
    if TRUE.iter().any(|t| t.eq_ignore_ascii_case(value)) {
        Ok(true)
    } else if FALSE.iter().any(|f| f.eq_ignore_ascii_case(value)) {
        Ok(false)
    } else {
        Err(invalid("expected true, false, yes, no, 1 or 0"))
    }
}

fn parse_port(value: &str) -> Result<u16, ValueError> {
    parse_number(value, 1, 65535)
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(|| invalid("expected a number from 1 to 65535"))
}

fn parse_group(value: &str) -> Result<Ipv4Addr, ValueError> {
    match value.parse::<Ipv4Addr>() {
        Ok(addr) if addr.is_multicast() => Ok(addr),
        _ => Err(invalid(
            "expected an IPv4 multicast address (224.0.0.0 to 239.255.255.255)",
        )),
    }
}

fn parse_cache_dir(value: &str) -> Result<PathBuf, ValueError> {
    if value.is_empty() || value.len() > MAX_PATH_BYTES || !value.starts_with('/') {
        return Err(invalid("expected an absolute directory path"));
    }
    if value.contains('\0') {
        return Err(invalid("expected a path without NUL characters"));
    }
    Ok(PathBuf::from(value))
}

/// A file name for `--config` or `--pacman-conf`.
pub(super) fn parse_file_path(value: &str) -> Result<PathBuf, ValueError> {
    if value.is_empty() || value.len() > MAX_PATH_BYTES || value.contains('\0') {
        return Err(invalid("expected a file path"));
    }
    Ok(PathBuf::from(value))
}

fn parse_upstream(value: &str) -> Result<String, ValueError> {
    match validate_template(value) {
        Ok(()) => Ok(value.to_owned()),
        Err(e) => Err(ValueError::Invalid(format!(
            "expected an http:// or https:// URL template such as \
             https://mirror.example/$repo/os/$arch ({e})"
        ))),
    }
}

fn parse_interface(value: &str) -> Result<String, ValueError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_INTERFACE_NAME
        && value != "."
        && value != ".."
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/');
    if ok {
        Ok(value.to_owned())
    } else {
        Err(invalid(
            "expected a network interface name (1 to 15 characters, no spaces or '/')",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Setting::ALL {
            assert_eq!(Setting::from_long(s.long()), Some(s));
            assert_eq!(Setting::from_key(s.key()), Some(s));
            assert_eq!(Setting::from_key(&s.key().to_ascii_lowercase()), Some(s));
        }
        assert_eq!(Setting::from_long("--prot"), None);
        assert_eq!(Setting::from_key("Config"), None);
    }

    #[test]
    fn https_is_fetch_or_redirect_in_any_case_and_later_layers_win() {
        let mut file = FileSettings::default();
        assert_eq!(
            file.https, None,
            "unset: the loader's default (fetch) applies"
        );
        file.set(Setting::Https, "Redirect").unwrap();
        assert_eq!(file.https, Some(HttpsMode::Redirect));
        for bad in ["", "302", "fetch ", "yes"] {
            assert_eq!(
                file.set(Setting::Https, bad),
                Err(ValueError::Invalid("expected fetch or redirect".into())),
                "{bad:?}"
            );
        }
        file.set(Setting::CaFile, "/etc/ca/private.pem").unwrap();
        assert!(file.set(Setting::CaFile, "").is_err());
        let mut top = FileSettings::default();
        top.set(Setting::Https, "FETCH").unwrap();
        let merged = file.overlay(top);
        assert_eq!(merged.https, Some(HttpsMode::Fetch));
        assert_eq!(merged.ca_file, Some(PathBuf::from("/etc/ca/private.pem")));
        assert_eq!(HttpsMode::default(), HttpsMode::Fetch);
    }

    #[test]
    fn numbers() {
        let cases: &[(&str, Option<u64>)] = &[
            ("1", Some(1)),
            ("65535", Some(65535)),
            ("0", None),
            ("65536", None),
            ("", None),
            ("+5", None),
            ("-5", None),
            (" 5", None),
            ("5x", None),
            ("99999999999999999999999", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_number(text, 1, 65535), *want, "{text:?}");
        }
    }

    #[test]
    fn shown_is_one_line_and_bounded() {
        assert_eq!(shown("a\nb"), "a\\nb");
        assert!(shown(&"x".repeat(500)).len() < 130);
    }

    #[test]
    fn repeatable_values_are_bounded_and_deduplicated() {
        let mut s = FileSettings::default();
        s.set(Setting::Interface, "eth0").unwrap();
        s.set(Setting::Interface, "eth0").unwrap();
        assert_eq!(s.interfaces, Some(vec!["eth0".to_owned()]));
        for i in 1..MAX_LIST_VALUES {
            s.set(Setting::Interface, &format!("if{i}")).unwrap();
        }
        assert_eq!(
            s.set(Setting::Interface, "one-more"),
            Err(ValueError::TooMany)
        );
    }
}
