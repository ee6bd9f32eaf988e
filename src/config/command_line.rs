//! The command line: `flocon [OPTIONS]`, `flocon query FILE [OPTIONS]`, `flocon status
//! [--json] [OPTIONS]` and `flocon doctor [OPTIONS]`, parsed into a
//! `CommandLine` without touching any file, and the help text. It does not apply
//! defaults or merge with the config file (the loader in `mod.rs` does).

use std::path::PathBuf;

use super::UsageError;
use super::options::{FileSettings, Setting, parse_file_path, shown};

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run the daemon.
    Run,
    /// Ask the running daemon who has this file.
    Query(String),
    /// Ask the running daemon what it is doing; `json`: print its JSON status as it is.
    Status {
        json: bool,
    },
    /// Check the daemon, pacman.conf, multicast, the peers and the cache.
    Doctor,
    Help,
    Version,
}

/// A parsed command line: the action, `-c` if given, and the settings given (lists
/// given here replace the config file's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandLine {
    pub action: Action,
    pub config_file: Option<PathBuf>,
    pub settings: FileSettings,
}

/// Parses the arguments after the program name. Options may come before or after
/// `query FILE`, as `--opt value` or `--opt=value`; `--` ends the options. `-h` and `-V`
/// end parsing at once (anything after them is not looked at).
pub fn parse_args(args: &[String]) -> Result<CommandLine, UsageError> {
    let mut config_file = None;
    let mut settings = FileSettings::default();
    let mut positionals: Vec<&str> = Vec::new();
    let mut only_positionals = false;
    let mut json = false;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let arg = arg.as_str();
        if only_positionals || arg == "-" || !arg.starts_with('-') {
            positionals.push(arg);
            continue;
        }
        if arg == "--" {
            only_positionals = true;
            continue;
        }
        let (name, inline) = match arg.strip_prefix("--").and_then(|a| a.split_once('=')) {
            Some((name, value)) => (&arg[..name.len() + 2], Some(value)),
            None => (arg, None),
        };
        let no_value = || match inline {
            Some(_) => Err(UsageError::new(format!("option '{name}' takes no value"))),
            None => Ok(()),
        };
        match name {
            "-h" | "--help" => {
                no_value()?;
                return Ok(CommandLine {
                    action: Action::Help,
                    config_file,
                    settings,
                });
            }
            "-V" | "--version" => {
                no_value()?;
                return Ok(CommandLine {
                    action: Action::Version,
                    config_file,
                    settings,
                });
            }
            "-d" | "--debug" => {
                no_value()?;
                settings.debug = Some(true);
            }
            "--json" => {
                no_value()?;
                json = true;
            }
            "-c" | "--config" => {
                let value = take_value(name, inline, &mut rest)?;
                let path = parse_file_path(value)
                    .map_err(|e| UsageError::new(e.message("--config", value)))?;
                config_file = Some(path);
            }
            _ => {
                let Some(setting) = Setting::from_long(name) else {
                    return Err(UsageError::new(format!("unknown option '{}'", shown(name))));
                };
                let value = take_value(name, inline, &mut rest)?;
                settings
                    .set(setting, value)
                    .map_err(|e| UsageError::new(e.message(name, value)))?;
            }
        }
    }
    let action = match positionals.as_slice() {
        [] => Action::Run,
        ["query"] => return Err(UsageError::new("missing file name after 'query'")),
        ["query", file, extra @ ..] => {
            if let Some(extra) = extra.first() {
                return Err(unexpected(extra));
            }
            if file.is_empty() {
                return Err(UsageError::new("empty file name after 'query'"));
            }
            Action::Query((*file).to_owned())
        }
        ["status", extra @ ..] => {
            if let Some(extra) = extra.first() {
                return Err(unexpected(extra));
            }
            Action::Status { json }
        }
        ["doctor", extra @ ..] => {
            if let Some(extra) = extra.first() {
                return Err(unexpected(extra));
            }
            Action::Doctor
        }
        [first, ..] => return Err(unexpected(first)),
    };
    if json && !matches!(action, Action::Status { .. }) {
        return Err(UsageError::new("option '--json' goes only with 'status'"));
    }
    Ok(CommandLine {
        action,
        config_file,
        settings,
    })
}

fn unexpected(arg: &str) -> UsageError {
    UsageError::new(format!(
        "unexpected argument '{}' (the commands are 'query FILE', 'status' and 'doctor')",
        shown(arg)
    ))
}

fn take_value<'a>(
    name: &str,
    inline: Option<&'a str>,
    rest: &mut std::slice::Iter<'a, String>,
) -> Result<&'a str, UsageError> {
    match inline {
        Some(value) => Ok(value),
        None => rest
            .next()
            .map(String::as_str)
            .ok_or_else(|| UsageError::new(format!("missing value for {name}"))),
    }
}

/// The text of `flocon --help` (also the source of the man page).
pub fn help_text() -> &'static str {
    HELP
}

const HELP: &str = "\
Usage: flocon [OPTIONS]
       flocon query FILE [OPTIONS]
       flocon status [--json] [OPTIONS]
       flocon doctor [OPTIONS]

Share pacman package caches between the Arch Linux hosts of a LAN. Put
    Server = http://localhost:19433/$repo/os/$arch
first in pacman's mirror list: flocon then answers each download from
another host's cache when one has the file, else from an upstream mirror.
Hosts find each other by IPv4 multicast; only hosts of the same
distribution and architecture share files.

'flocon query FILE' asks the flocon running on this host which peers
have FILE (only --local-port, --config and --debug matter there).

'flocon status' asks the flocon running on this host what it is doing:
its peers, the transfers in flight, the files and bytes from peers and
from upstream since start (--json: the daemon's JSON status, for scripts).
'flocon doctor' checks that it works and says how to fix what does not:
the daemon answers, pacman.conf puts flocon first (--pacman-conf), the
multicast group is joined and peers are heard, each peer's TCP port
answers, the cache is readable, the peers' clocks agree. Both exit 1
when something is wrong or no daemon answers.

Options (a value may also be given as --option=VALUE):
  -c, --config FILE          config file to read (default /etc/flocon.conf,
                             skipped if that file does not exist)
  -d, --debug                log debugging messages
      --json                 'flocon status' prints the JSON status
      --cache-dir DIR        package cache to share, repeatable (default:
                             pacman.conf's CacheDir, else
                             /var/cache/pacman/pkg)
      --pacman-conf FILE     pacman configuration to read
                             (default /etc/pacman.conf)
      --upstream URL         mirror to use for every repository when no peer
                             has a file, an http:// or https:// template
                             with $repo and $arch, repeatable (default:
                             pacman.conf's Server lines, except the ones
                             that point at flocon itself)
      --port N               peer port, TCP and UDP (default 19432)
      --local-port N         loopback port that pacman uses (default 19433)
      --group ADDR           IPv4 multicast group of the announcements
                             (default 239.255.19.32: administratively
                             scoped, RFC 2365, never routed off the site)
      --interface NAME       network interface to find peers on,
                             repeatable (default: all but loopback and
                             container or VM bridges)
      --announce-interval S  seconds between announcements, 1 to 3600
                             (default 60)
      --lookup-timeout MS    how long to wait for peers to say they have
                             a file, 10 to 5000 milliseconds (default 250)
      --max-connections N    connections per listener, 1 to 16384
                             (default 256)
      --architecture ARCH    package architecture, or auto (default:
                             pacman.conf's Architecture, else the machine's)
      --distro ID            distribution id (default: ID= of
                             /etc/os-release, else unknown)
      --ban-time S           seconds a peer that sent a file unlike its
                             sync database entry is banned, 1 to 604800
                             (default 3600)
      --https MODE           fetch: flocon fetches https:// mirrors itself
                             (TLS checked against the system's CA store);
                             redirect: pacman is sent to them with a 302
                             (default fetch)
      --ca-file PATH         a PEM file (or a folder of them) of CA
                             certificates trusted for https:// mirrors
                             besides /etc/ssl/certs (a private CA)
      --spool-dir DIR        where packages being fetched from upstream are
                             written for the LAN to read while in flight
                             (default $CACHE_DIRECTORY, systemd's
                             CacheDirectory=, else /var/tmp); the files
                             have no name there
      --spool-size MIB       the spool's cap, 0 for no spool (default 1024)
      --spool-keep S         seconds a finished spool file stays shareable
                             unless pacman's cache has it (default 3600)
  -h, --help                 print this help and exit
  -V, --version              print the version and exit

Config file:
  Each option but -c, -h and -V can be set in the config file, one
  'Key = Value' per line: Debug, CacheDir, PacmanConf, Upstream, Port,
  LocalPort, Group, Interface, AnnounceInterval, LookupTimeout,
  MaxConnections, Architecture, Distro, BanTime, Https, CaFile, SpoolDir,
  SpoolSize, SpoolKeep (keys match in any case; a bare
  'Debug' line means Debug = yes). CacheDir, Upstream and Interface may be
  repeated. '#' starts a comment. The command line wins over the file; a
  repeatable option given on the command line replaces the file's list.

pacman.conf:
  A comment line '# flocon: Server = URL' in a repository section or in a
  mirror list it includes names a mirror that flocon tries first for
  those repositories; pacman itself ignores the line.

Signals:
  SIGUSR1           log the known peers and the daemon's state
  SIGUSR2           rejoin the multicast group, forget mirror addresses
  SIGTERM, SIGINT   stop

Exit status: 2 for a bad option or config file.
";

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;
    use crate::config::HttpsMode;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    fn parse(text: &str) -> Result<CommandLine, String> {
        parse_args(&args(text)).map_err(|e| e.to_string())
    }

    fn settings(text: &str) -> FileSettings {
        match parse(text) {
            Ok(cl) => cl.settings,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    #[test]
    fn each_option_good() {
        let s = settings(
            "-d --cache-dir /a --cache-dir /b --pacman-conf /p.conf \
             --upstream http://m/$repo/os/$arch --upstream https://n/$repo \
             --port 1 --local-port 65535 --group 224.0.0.1 --interface eth0 \
             --interface wlan0 --announce-interval 3600 --lookup-timeout 10 \
             --max-connections 16384 --architecture aarch64 --distro archarm --ban-time 5 \
             --https redirect --ca-file /etc/my-ca.pem --spool-dir /var/cache/flocon \
             --spool-size 0 --spool-keep 60",
        );
        let want = FileSettings {
            debug: Some(true),
            cache_dirs: Some(vec!["/a".into(), "/b".into()]),
            pacman_conf: Some("/p.conf".into()),
            upstreams: Some(vec![
                "http://m/$repo/os/$arch".into(),
                "https://n/$repo".into(),
            ]),
            port: Some(1),
            local_port: Some(65535),
            group: Some(Ipv4Addr::new(224, 0, 0, 1)),
            interfaces: Some(vec!["eth0".into(), "wlan0".into()]),
            announce_interval: Some(Duration::from_secs(3600)),
            lookup_timeout: Some(Duration::from_millis(10)),
            max_connections: Some(16384),
            architecture: Some("aarch64".into()),
            distro: Some("archarm".into()),
            ban_time: Some(Duration::from_secs(5)),
            https: Some(HttpsMode::Redirect),
            ca_file: Some("/etc/my-ca.pem".into()),
            spool_dir: Some("/var/cache/flocon".into()),
            spool_size: Some(0),
            spool_keep: Some(Duration::from_secs(60)),
        };
        assert_eq!(s, want);
    }

    #[test]
    fn equals_form_and_long_debug() {
        let s =
            settings("--debug --port=80 --cache-dir=/x --upstream=http://m/?a=b --group=239.0.0.1");
        assert_eq!(s.debug, Some(true));
        assert_eq!(s.port, Some(80));
        assert_eq!(s.cache_dirs, Some(vec!["/x".into()]));
        assert_eq!(s.upstreams, Some(vec!["http://m/?a=b".into()]));
        assert_eq!(s.group, Some(Ipv4Addr::new(239, 0, 0, 1)));
        assert_eq!(settings("--port 1 --port 2").port, Some(2));
        assert_eq!(
            settings("--architecture auto").architecture.as_deref(),
            Some("auto")
        );
        let empty = parse_args(&["--distro=".to_owned()])
            .unwrap_err()
            .to_string();
        assert!(
            empty.starts_with("invalid value '' for --distro"),
            "{empty}"
        );
    }

    #[test]
    fn each_option_bad() {
        let cases: &[(&str, &str)] = &[
            (
                "--port abc",
                "invalid value 'abc' for --port: expected a number from 1 to 65535",
            ),
            (
                "--port 0",
                "invalid value '0' for --port: expected a number from 1 to 65535",
            ),
            (
                "--port=65536",
                "invalid value '65536' for --port: expected a number from 1 to 65535",
            ),
            (
                "--local-port -1",
                "invalid value '-1' for --local-port: expected a number from 1 to 65535",
            ),
            ("--prot 1", "unknown option '--prot'"),
            ("--prot=1", "unknown option '--prot'"),
            ("-x", "unknown option '-x'"),
            ("-dV", "unknown option '-dV'"),
            ("--port", "missing value for --port"),
            ("-c", "missing value for -c"),
            ("--config", "missing value for --config"),
            ("query", "missing file name after 'query'"),
            (
                "query a b",
                "unexpected argument 'b' (the commands are 'query FILE', 'status' and 'doctor')",
            ),
            (
                "serve",
                "unexpected argument 'serve' (the commands are 'query FILE', 'status' and 'doctor')",
            ),
            ("--debug=yes", "option '--debug' takes no value"),
            ("--help=1", "option '--help' takes no value"),
            (
                "--cache-dir relative",
                "invalid value 'relative' for --cache-dir: expected an absolute directory path",
            ),
            (
                "--group 192.168.1.1",
                "invalid value '192.168.1.1' for --group: expected an IPv4 multicast address (224.0.0.0 to 239.255.255.255)",
            ),
            (
                "--group 240.0.0.1",
                "invalid value '240.0.0.1' for --group: expected an IPv4 multicast address (224.0.0.0 to 239.255.255.255)",
            ),
            (
                "--group ff02::1",
                "invalid value 'ff02::1' for --group: expected an IPv4 multicast address (224.0.0.0 to 239.255.255.255)",
            ),
            (
                "--interface this-name-is-too-long",
                "invalid value 'this-name-is-too-long' for --interface: expected a network interface name (1 to 15 characters, no spaces or '/')",
            ),
            (
                "--interface a/b",
                "invalid value 'a/b' for --interface: expected a network interface name (1 to 15 characters, no spaces or '/')",
            ),
            (
                "--announce-interval 0",
                "invalid value '0' for --announce-interval: expected a number of seconds from 1 to 3600",
            ),
            (
                "--announce-interval 3601",
                "invalid value '3601' for --announce-interval: expected a number of seconds from 1 to 3600",
            ),
            (
                "--lookup-timeout 9",
                "invalid value '9' for --lookup-timeout: expected a number of milliseconds from 10 to 5000",
            ),
            (
                "--lookup-timeout 5001",
                "invalid value '5001' for --lookup-timeout: expected a number of milliseconds from 10 to 5000",
            ),
            (
                "--max-connections 0",
                "invalid value '0' for --max-connections: expected a number from 1 to 16384",
            ),
            (
                "--max-connections 16385",
                "invalid value '16385' for --max-connections: expected a number from 1 to 16384",
            ),
            (
                "--architecture x86/64",
                "invalid value 'x86/64' for --architecture: expected 'auto' or an architecture name such as x86_64",
            ),
            (
                "--distro Arch!",
                "invalid value 'Arch!' for --distro: expected a distribution id such as arch (letters, digits, '.', '_', '-')",
            ),
            (
                "--upstream ftp://m/$repo",
                "invalid value 'ftp://m/$repo' for --upstream: expected an http:// or https:// URL template such as https://mirror.example/$repo/os/$arch (it must start with http:// or https://)",
            ),
            (
                "--upstream mirror.example",
                "invalid value 'mirror.example' for --upstream: expected an http:// or https:// URL template such as https://mirror.example/$repo/os/$arch (it must start with http:// or https://)",
            ),
            (
                "--upstream http:///x",
                "invalid value 'http:///x' for --upstream: expected an http:// or https:// URL template such as https://mirror.example/$repo/os/$arch (it has no host name)",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).err().as_deref(), Some(*want), "{text}");
        }
    }

    #[test]
    fn errors_are_one_line() {
        let e = parse_args(&["--port".to_owned(), "1\n2".to_owned()]).unwrap_err();
        assert!(!e.to_string().contains('\n'), "{e}");
        assert!(e.to_string().contains("1\\n2"));
    }

    #[test]
    fn too_many_list_values() {
        let mut list = Vec::new();
        for i in 0..=super::super::options::MAX_LIST_VALUES {
            list.push("--cache-dir".to_owned());
            list.push(format!("/c{i}"));
        }
        let e = parse_args(&list).unwrap_err().to_string();
        assert_eq!(e, "too many values for --cache-dir (at most 64)");
    }

    #[test]
    fn actions() {
        let cases: &[(&str, Action)] = &[
            ("", Action::Run),
            ("-d", Action::Run),
            (
                "query foo-1.0-1-x86_64.pkg.tar.zst",
                Action::Query("foo-1.0-1-x86_64.pkg.tar.zst".into()),
            ),
            ("-d query f --local-port 5", Action::Query("f".into())),
            ("query -- -weird", Action::Query("-weird".into())),
            ("-- query f", Action::Query("f".into())),
            ("-h", Action::Help),
            ("--help --prot", Action::Help),
            ("--port 1 -V", Action::Version),
            ("--version", Action::Version),
        ];
        for (text, want) in cases {
            match parse(text) {
                Ok(cl) => assert_eq!(cl.action, *want, "{text}"),
                Err(e) => panic!("{text}: {e}"),
            }
        }
        let cl = parse("-c /etc/other.conf --config=/x.conf").unwrap();
        assert_eq!(cl.config_file, Some("/x.conf".into()));
        assert_eq!(cl.settings, FileSettings::default());
    }

    #[test]
    fn help_names_every_option_and_default() {
        let help = help_text();
        for s in Setting::ALL {
            assert!(help.contains(s.long()), "{}", s.long());
            assert!(help.contains(s.key()), "{}", s.key());
        }
        for text in [
            "/etc/flocon.conf",
            "/etc/pacman.conf",
            "/var/cache/pacman/pkg",
            "19432",
            "19433",
            "239.255.19.32",
            "RFC 2365",
            "(default 60)",
            "(default 250)",
            "(default 256)",
            "SIGUSR1",
            "SIGUSR2",
            "SIGTERM",
            "-h, --help",
            "-V, --version",
            "-c, --config",
            "-d, --debug",
            "flocon query FILE",
        ] {
            assert!(help.contains(text), "{text}");
        }
        for line in help.lines() {
            assert!(line.chars().count() <= 80, "{line}");
        }
    }

    #[test]
    fn help_defaults_match_constants() {
        use super::super::options::*;
        let help = help_text();
        assert!(help.contains(&DEFAULT_PORT.to_string()));
        assert!(help.contains(&DEFAULT_LOCAL_PORT.to_string()));
        assert!(help.contains(&DEFAULT_GROUP.to_string()));
        assert!(help.contains(&format!(
            "(default {})",
            DEFAULT_ANNOUNCE_INTERVAL.as_secs()
        )));
        assert!(help.contains(&format!("(default {})", DEFAULT_LOOKUP_TIMEOUT.as_millis())));
        assert!(help.contains(&format!("(default {})", DEFAULT_MAX_CONNECTIONS)));
        assert!(help.contains(DEFAULT_CONFIG_FILE));
        assert!(help.contains(DEFAULT_PACMAN_CONF));
        assert!(help.contains(DEFAULT_CACHE_DIR));
    }
}
