//! Configuration: the command line, flocon's config file, pacman.conf with the mirror
//! lists it includes, and the host's distribution and architecture, merged into one
//! `Settings` (or a help, version or query request) by `load`. Every parser is pure and
//! public (for tests and fuzz targets): text in, values and warnings out, no logging, no
//! environment. Only `load` reads files and asks the kernel for the machine name. This
//! module does not log, print or exit: the caller prints `Invocation::Help`/`Version`, logs
//! `Settings::warnings`, and turns a `UsageError` into `flocon: <message>` and exit status
//! 2. It depends on no other module of the crate.
//!
//! Submodules: `options` (what can be set, defaults, value checks), `command_line`
//! (arguments, help text), `config_file` (flocon.conf), `pacman_conf` (pacman.conf,
//! URL templates, `Upstreams`), `host` (os-release, uname).

mod command_line;
mod config_file;
mod host;
mod options;
mod pacman_conf;

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use command_line::{Action, CommandLine, help_text, parse_args};
pub use config_file::parse_config_file;
pub use host::{machine_architecture, parse_os_release};
pub use options::{
    DEFAULT_ANNOUNCE_INTERVAL, DEFAULT_BAN_TIME, DEFAULT_CACHE_DIR, DEFAULT_CONFIG_FILE,
    DEFAULT_GROUP, DEFAULT_LOCAL_PORT, DEFAULT_LOOKUP_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PACMAN_CONF, DEFAULT_PORT, FileSettings, HttpsMode, MAX_LIST_VALUES,
};
pub use pacman_conf::{
    ConfigSource, DEFAULT_DB_PATH, MemoryFs, PacmanConf, Placement, RealFs, Repo, TemplateError,
    Upstreams, expand, flocon_placement, parse_pacman_conf, points_at_local_port,
    validate_template,
};

/// os-release files, in the order os-release(5) says to look for them.
const OS_RELEASE_FILES: [&str; 2] = ["/etc/os-release", "/usr/lib/os-release"];

/// A bad command line or config file. Its `Display` is one line naming the problem,
/// without the `flocon: ` prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError {
    message: String,
}

impl UsageError {
    /// Control characters (newlines included) in `message` become spaces.
    pub fn new(message: impl Into<String>) -> UsageError {
        let message: String = message.into();
        let message = if message.contains(char::is_control) {
            message
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect()
        } else {
            message
        };
        UsageError { message }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UsageError {}

/// What the program was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invocation {
    /// Print this text to stdout and exit 0.
    Help(String),
    /// Print this line (`flocon <version>`) to stdout and exit 0.
    Version(String),
    /// Run the daemon.
    Run(Settings),
    /// Ask the running daemon (at `settings.local_port`) who has `file`.
    Query { file: String, settings: Settings },
    /// Ask the running daemon what it is doing (`json`: as JSON).
    Status { json: bool, settings: Settings },
    /// Check the daemon and this host's setup.
    Doctor(Settings),
}

/// Everything the daemon needs, defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub debug: bool,
    /// The config file actually read; `None` if the default one does not exist.
    pub config_file: Option<PathBuf>,
    /// Caches to share, in order, at least one.
    pub cache_dirs: Vec<PathBuf>,
    pub pacman_conf: PathBuf,
    pub upstreams: Upstreams,
    /// Peer port, TCP and UDP.
    pub port: u16,
    /// Loopback port pacman talks to; never equal to `port`.
    pub local_port: u16,
    /// Multicast group, always a multicast address.
    pub group: Ipv4Addr,
    /// Interfaces to find peers on; empty means the default (all).
    pub interfaces: Vec<String>,
    pub announce_interval: Duration,
    pub lookup_timeout: Duration,
    /// Per listener.
    pub max_connections: usize,
    /// Resolved: never `auto`.
    pub architecture: String,
    /// Distribution id, `unknown` if none is known.
    pub distro: String,
    /// The sync database of each repository of pacman.conf, in its order:
    /// `(repo, <DBPath>/sync/<repo>.db)`. Empty when pacman.conf has none.
    pub sync_databases: Vec<(String, PathBuf)>,
    /// How long a peer caught sending wrong bytes is banned.
    pub ban_time: Duration,
    /// Fetch `https://` mirrors, or redirect pacman to them.
    pub https: HttpsMode,
    /// An extra CA certificate file (or folder of PEM files) trusted for
    /// `https://` mirrors, beside the system's.
    pub ca_file: Option<PathBuf>,
    /// Where files in flight are spooled (`None`: `$CACHE_DIRECTORY`, else a private
    /// folder for this run: see [`crate::spool::default_dir`]).
    pub spool_dir: Option<PathBuf>,
    /// The spool's bounds (a `max_bytes` of 0: no spool).
    pub spool: crate::spool::Limits,
    /// Things worth a warning in the log (unknown keys, unreadable mirror lists, ...).
    pub warnings: Vec<String>,
}

/// `flocon <version>`.
pub fn version_text() -> String {
    format!("flocon {}", env!("CARGO_PKG_VERSION"))
}

/// Reads the command line (without the program name), the config file, pacman.conf,
/// os-release and the machine architecture, and merges them: command line over config
/// file over pacman.conf over built-in defaults.
pub fn load(args: impl IntoIterator<Item = String>) -> Result<Invocation, UsageError> {
    let args: Vec<String> = args.into_iter().collect();
    load_with(&args, &RealFs, &machine_architecture())
}

/// `load` over any `ConfigSource`, with the machine architecture given: what the tests
/// drive.
pub fn load_with(
    args: &[String],
    source: &dyn ConfigSource,
    machine: &str,
) -> Result<Invocation, UsageError> {
    let command_line = parse_args(args)?;
    match command_line.action {
        Action::Help => Ok(Invocation::Help(help_text().to_owned())),
        Action::Version => Ok(Invocation::Version(version_text())),
        Action::Run | Action::Query(_) | Action::Status { .. } | Action::Doctor => {
            resolve(command_line, source, machine)
        }
    }
}

fn resolve(
    command_line: CommandLine,
    source: &dyn ConfigSource,
    machine: &str,
) -> Result<Invocation, UsageError> {
    let (file_settings, mut warnings, config_file) =
        read_config_file(source, command_line.config_file.as_deref())?;
    let given = file_settings.overlay(command_line.settings);

    let port = given.port.unwrap_or(DEFAULT_PORT);
    let local_port = given.local_port.unwrap_or(DEFAULT_LOCAL_PORT);
    if port == local_port {
        return Err(UsageError::new(format!(
            "--port and --local-port must differ (both are {port})"
        )));
    }

    let pacman_conf_path = given
        .pacman_conf
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PACMAN_CONF));
    let architecture_given = given.architecture.filter(|a| a != "auto");
    let needs_pacman_conf =
        given.cache_dirs.is_none() || given.upstreams.is_none() || architecture_given.is_none();
    // Always read: its repositories and DBPath say where the sync databases are. Its
    // warnings matter only when flocon takes settings from it.
    let (pacman, pacman_warnings) = parse_pacman_conf(&pacman_conf_path, source, local_port);
    if needs_pacman_conf {
        warnings.extend(pacman_warnings);
    }
    let sync_databases = pacman
        .repos
        .iter()
        .map(|r| (r.name.clone(), pacman.sync_database(&r.name)))
        .collect();

    let cache_dirs = match given.cache_dirs {
        Some(dirs) => dirs,
        None if !pacman.cache_dirs.is_empty() => pacman.cache_dirs,
        None => vec![PathBuf::from(DEFAULT_CACHE_DIR)],
    };
    let upstreams = match given.upstreams {
        Some(templates) => Upstreams::explicit(templates),
        None => Upstreams::from_repos(pacman.repos),
    };
    let architecture = architecture_given
        .or(pacman.architecture)
        .unwrap_or_else(|| machine.to_owned());
    let distro = match given.distro {
        Some(distro) => distro,
        None => read_distro(source, &mut warnings),
    };

    let settings = Settings {
        debug: given.debug.unwrap_or(false),
        config_file,
        cache_dirs,
        pacman_conf: pacman_conf_path,
        upstreams,
        port,
        local_port,
        group: given.group.unwrap_or(DEFAULT_GROUP),
        interfaces: given.interfaces.unwrap_or_default(),
        announce_interval: given.announce_interval.unwrap_or(DEFAULT_ANNOUNCE_INTERVAL),
        lookup_timeout: given.lookup_timeout.unwrap_or(DEFAULT_LOOKUP_TIMEOUT),
        max_connections: given.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
        architecture,
        distro,
        sync_databases,
        ban_time: given.ban_time.unwrap_or(DEFAULT_BAN_TIME),
        https: given.https.unwrap_or_default(),
        ca_file: given.ca_file,
        spool_dir: given.spool_dir,
        spool: crate::spool::Limits {
            max_bytes: given
                .spool_size
                .map_or(crate::spool::book::DEFAULT_MAX_BYTES, |mib| mib << 20),
            keep: given.spool_keep.unwrap_or(crate::spool::book::DEFAULT_KEEP),
            ..crate::spool::Limits::default()
        },
        warnings,
    };
    Ok(match command_line.action {
        Action::Query(file) => Invocation::Query { file, settings },
        Action::Status { json } => Invocation::Status { json, settings },
        Action::Doctor => Invocation::Doctor(settings),
        Action::Run | Action::Help | Action::Version => Invocation::Run(settings),
    })
}

/// The config file's settings and warnings, and its path if it was read. A missing
/// default file is skipped; any other failure is an error.
fn read_config_file(
    source: &dyn ConfigSource,
    explicit: Option<&Path>,
) -> Result<(FileSettings, Vec<String>, Option<PathBuf>), UsageError> {
    let path = explicit.unwrap_or(Path::new(DEFAULT_CONFIG_FILE));
    let text = match source.read(path) {
        Ok(text) => text,
        Err(e) if explicit.is_none() && e.kind() == io::ErrorKind::NotFound => {
            return Ok((FileSettings::default(), Vec::new(), None));
        }
        Err(e) => {
            return Err(UsageError::new(format!(
                "cannot read config file {}: {e}",
                path.display()
            )));
        }
    };
    let (settings, warnings) = parse_config_file(&path.display().to_string(), &text)?;
    Ok((settings, warnings, Some(path.to_path_buf())))
}

fn read_distro(source: &dyn ConfigSource, warnings: &mut Vec<String>) -> String {
    for file in OS_RELEASE_FILES {
        if let Ok(text) = source.read(Path::new(file)) {
            if let Some(id) = parse_os_release(&text) {
                return id;
            }
            warnings.push(format!(
                "{file}: no usable ID= line; distribution id 'unknown'"
            ));
            return "unknown".to_owned();
        }
    }
    warnings.push(format!(
        "{} not found; distribution id 'unknown'",
        OS_RELEASE_FILES[0]
    ));
    "unknown".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MACHINE: &str = "x86_64";

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    fn arch_host() -> MemoryFs {
        MemoryFs::new()
            .with("/etc/os-release", "NAME=\"Arch Linux\"\nID=arch\n")
            .with(
                "/etc/pacman.conf",
                "[options]\nCacheDir = /pc/cache\nArchitecture = auto\n\
                 [core]\nServer = http://localhost:19433/$repo/os/$arch\n\
                 Include = /etc/pacman.d/mirrorlist\n",
            )
            .with(
                "/etc/pacman.d/mirrorlist",
                "Server = https://m.example/$repo/os/$arch\n",
            )
    }

    fn run(text: &str, fs: &MemoryFs) -> Settings {
        match load_with(&args(text), fs, MACHINE) {
            Ok(Invocation::Run(settings)) => settings,
            other => panic!("{text}: {other:?}"),
        }
    }

    fn error(text: &str, fs: &MemoryFs) -> String {
        match load_with(&args(text), fs, MACHINE) {
            Err(e) => e.to_string(),
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn defaults_without_any_file() {
        let s = run("", &MemoryFs::new());
        assert!(!s.debug);
        assert_eq!(s.config_file, None);
        assert_eq!(s.cache_dirs, vec![PathBuf::from(DEFAULT_CACHE_DIR)]);
        assert_eq!(s.pacman_conf, PathBuf::from("/etc/pacman.conf"));
        assert!(s.upstreams.is_empty());
        assert_eq!((s.port, s.local_port), (19432, 19433));
        assert_eq!(s.group, Ipv4Addr::new(239, 255, 19, 32));
        assert!(s.interfaces.is_empty());
        assert_eq!(s.announce_interval, Duration::from_secs(60));
        assert_eq!(s.lookup_timeout, Duration::from_millis(250));
        assert_eq!(s.max_connections, 256);
        assert_eq!(s.architecture, MACHINE);
        assert_eq!(s.distro, "unknown");
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
        assert!(s.warnings[0].starts_with("/etc/pacman.conf: cannot read"));
        assert!(s.warnings[1].starts_with("/etc/os-release not found"));
    }

    #[test]
    fn pacman_conf_and_os_release_fill_in() {
        let s = run("", &arch_host());
        assert_eq!(s.cache_dirs, vec![PathBuf::from("/pc/cache")]);
        assert_eq!(
            s.upstreams.templates_for("core"),
            ["https://m.example/$repo/os/$arch"]
        );
        assert_eq!(s.architecture, "x86_64");
        assert_eq!(s.distro, "arch");
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);

        let fs = arch_host()
            .with("/etc/pacman.conf", "[options]\nArchitecture = aarch64\n")
            .with("/etc/os-release", "ID=\"archarm\"\n");
        let s = run("", &fs);
        assert_eq!(s.architecture, "aarch64");
        assert_eq!(s.distro, "archarm");
        assert_eq!(run("--architecture auto", &fs).architecture, "aarch64");
        assert_eq!(run("--architecture armv7h", &fs).architecture, "armv7h");

        let fs = MemoryFs::new().with("/usr/lib/os-release", "ID=manjaro\n");
        assert_eq!(run("", &fs).distro, "manjaro");
        let fs = MemoryFs::new().with("/etc/os-release", "NAME=x\n");
        let s = run("", &fs);
        assert_eq!(s.distro, "unknown");
        assert!(s.warnings.iter().any(|w| w.contains("no usable ID=")));
    }

    #[test]
    fn local_port_decides_what_points_at_flocon() {
        let s = run("--local-port 8000", &arch_host());
        assert_eq!(
            s.upstreams.templates_for("core"),
            [
                "http://localhost:19433/$repo/os/$arch",
                "https://m.example/$repo/os/$arch"
            ]
        );
    }

    #[test]
    fn config_file_then_command_line() {
        let fs = arch_host().with(
            "/etc/flocon.conf",
            "Debug\nPort = 1000\nLocalPort = 1001\nCacheDir = /f1\nCacheDir = /f2\n\
             Interface = eth0\nUpstream = http://file.example/$repo\nDistro = fromfile\n\
             LookupTimeout = 100\nBogus = 1\n",
        );
        let s = run("", &fs);
        assert!(s.debug);
        assert_eq!(s.config_file, Some(PathBuf::from("/etc/flocon.conf")));
        assert_eq!((s.port, s.local_port), (1000, 1001));
        assert_eq!(
            s.cache_dirs,
            vec![PathBuf::from("/f1"), PathBuf::from("/f2")]
        );
        assert_eq!(s.interfaces, vec!["eth0".to_owned()]);
        assert_eq!(
            s.upstreams.templates_for("core"),
            ["http://file.example/$repo"]
        );
        assert_eq!(
            s.upstreams.templates_for("other"),
            ["http://file.example/$repo"]
        );
        assert_eq!(s.distro, "fromfile");
        assert_eq!(s.lookup_timeout, Duration::from_millis(100));
        assert_eq!(
            s.warnings,
            vec!["/etc/flocon.conf:10: unknown key 'Bogus', ignored"]
        );

        let s = run(
            "--port 2000 --cache-dir /c1 --interface wlan0 --interface eth1 --distro cli",
            &fs,
        );
        assert_eq!((s.port, s.local_port), (2000, 1001));
        assert_eq!(s.cache_dirs, vec![PathBuf::from("/c1")]);
        assert_eq!(s.interfaces, vec!["wlan0".to_owned(), "eth1".to_owned()]);
        assert_eq!(s.distro, "cli");
        assert_eq!(s.lookup_timeout, Duration::from_millis(100));
    }

    #[test]
    fn explicit_config_file() {
        let fs = arch_host().with("/tmp/f.conf", "Port = 3000\n");
        let s = run("-c /tmp/f.conf", &fs);
        assert_eq!(s.port, 3000);
        assert_eq!(s.config_file, Some(PathBuf::from("/tmp/f.conf")));
        let e = error("--config /missing.conf", &fs);
        assert!(
            e.starts_with("cannot read config file /missing.conf:"),
            "{e}"
        );
        let fs = arch_host().with("/etc/flocon.conf", "Port = 0\n");
        assert_eq!(
            error("", &fs),
            "/etc/flocon.conf:1: invalid value '0' for Port: expected a number from 1 to 65535"
        );
    }

    #[test]
    fn ports_must_differ() {
        assert_eq!(
            error("--port 19433", &arch_host()),
            "--port and --local-port must differ (both are 19433)"
        );
    }

    #[test]
    fn pacman_conf_not_read_when_not_needed() {
        let s = run(
            "--cache-dir /c --upstream http://u/$repo --architecture x86_64 --distro arch",
            &MemoryFs::new(),
        );
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let fs = arch_host().with("/other/pacman.conf", "[options]\nCacheDir = /other\n");
        assert_eq!(
            run("--pacman-conf /other/pacman.conf", &fs).cache_dirs,
            vec![PathBuf::from("/other")]
        );
    }

    #[test]
    fn query_help_version() {
        let fs = arch_host();
        match load_with(
            &args("query foo.pkg.tar.zst --local-port 7000"),
            &fs,
            MACHINE,
        ) {
            Ok(Invocation::Query { file, settings }) => {
                assert_eq!(file, "foo.pkg.tar.zst");
                assert_eq!(settings.local_port, 7000);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            load_with(&args("-h"), &fs, MACHINE),
            Ok(Invocation::Help(help_text().to_owned()))
        );
        assert_eq!(
            load(args("--version")),
            Ok(Invocation::Version(format!(
                "flocon {}",
                env!("CARGO_PKG_VERSION")
            )))
        );
        assert_eq!(
            load(args("--prot")).err().map(|e| e.to_string()).as_deref(),
            Some("unknown option '--prot'")
        );
    }

    #[test]
    fn usage_error_is_one_line() {
        assert_eq!(UsageError::new("a\nb\r").to_string(), "a b ");
    }
}
