//! Reading pacman.conf and the mirror lists it includes: cache directories, `DBPath`, the
//! architecture, and each repository's upstream server templates (`# flocon: Server =`
//! comments first, then `Server` lines, minus the ones that point at flocon itself). Also
//! URL templates (`expand`, `validate_template`) and `Upstreams`, the per-repository
//! choice of templates. The parser is pure over a `ConfigSource`, so tests and fuzz
//! targets run it on an in-memory file tree; it never fails, it warns and goes on. It
//! does not read flocon's own config file, and it does not fetch anything.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};

use super::host::valid_architecture;

/// Largest file a `RealFs` reads.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Longer lines are skipped with a warning.
pub const MAX_LINE_BYTES: usize = 4096;
/// Longest URL template accepted.
pub const MAX_TEMPLATE_BYTES: usize = 2048;
/// Servers kept per repository.
pub const MAX_SERVERS_PER_REPO: usize = 64;
/// Repositories kept.
pub const MAX_REPOS: usize = 256;
/// `CacheDir` values kept.
pub const MAX_CACHE_DIRS: usize = 64;
/// Deepest `Include` nesting followed (pacman.conf itself is depth 0).
pub const MAX_INCLUDE_DEPTH: usize = 8;
/// Most files read in all, pacman.conf included.
pub const MAX_FILES: usize = 64;
/// Most directory entries looked at for one `Include` glob.
const MAX_DIR_ENTRIES: usize = 4096;
/// Warnings kept; one more line says that some were left out.
const MAX_WARNINGS: usize = 64;

/// Where configuration text comes from: the real file system, or a map in tests.
pub trait ConfigSource {
    /// The whole text of a file.
    fn read(&self, path: &Path) -> io::Result<String>;
    /// The full paths of the entries of a directory, in any order.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
}

/// The real file system. Reads at most `MAX_FILE_BYTES` (larger files are an error);
/// bytes that are not UTF-8 become U+FFFD.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

impl ConfigSource for RealFs {
    fn read(&self, path: &Path) -> io::Result<String> {
        let file = std::fs::File::open(path)?;
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "file larger than 1 MiB",
            ));
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(std::fs::read_dir(dir)?
            .take(MAX_DIR_ENTRIES)
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .collect())
    }
}

/// An in-memory file tree for tests and fuzz targets. A directory exists when some file
/// lies directly in it.
#[derive(Clone, Debug, Default)]
pub struct MemoryFs {
    files: BTreeMap<PathBuf, String>,
}

impl MemoryFs {
    pub fn new() -> MemoryFs {
        MemoryFs::default()
    }

    /// Adds (or replaces) a file.
    pub fn with(mut self, path: impl Into<PathBuf>, text: impl Into<String>) -> MemoryFs {
        self.insert(path, text);
        self
    }

    pub fn insert(&mut self, path: impl Into<PathBuf>, text: impl Into<String>) {
        self.files.insert(path.into(), text.into());
    }
}

impl ConfigSource for MemoryFs {
    fn read(&self, path: &Path) -> io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let entries: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect();
        if entries.is_empty() {
            Err(io::Error::from(io::ErrorKind::NotFound))
        } else {
            Ok(entries)
        }
    }
}

/// What flocon takes from pacman.conf.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PacmanConf {
    /// The `CacheDir` values in order, without duplicates; empty if there are none (the
    /// caller then uses pacman's default).
    pub cache_dirs: Vec<PathBuf>,
    /// The first `Architecture` value; `None` if absent or `auto` (the machine's).
    pub architecture: Option<String>,
    /// Repository sections in the order they first appear.
    pub repos: Vec<Repo>,
    /// The first `DBPath` value; `None` if absent (pacman's default, [`DEFAULT_DB_PATH`]).
    pub db_path: Option<PathBuf>,
}

/// pacman's database directory when pacman.conf has no `DBPath`.
pub const DEFAULT_DB_PATH: &str = "/var/lib/pacman/";

impl PacmanConf {
    /// The sync database pacman keeps for repository `repo`: `<DBPath>/sync/<repo>.db`.
    pub fn sync_database(&self, repo: &str) -> PathBuf {
        let db_path = self
            .db_path
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_DB_PATH));
        db_path.join("sync").join(format!("{repo}.db"))
    }
}

/// One repository section of pacman.conf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repo {
    pub name: String,
    /// URL templates, `$repo` and `$arch` unexpanded: `# flocon: Server =` ones first, then
    /// the `Server` lines, each in reading order, without duplicates or self-pointing ones.
    pub servers: Vec<String>,
}

/// Why a URL template was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateError {
    TooLong,
    NotHttp,
    NoHost,
    BadCharacter,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TemplateError::TooLong => "longer than 2048 bytes",
            TemplateError::NotHttp => "it must start with http:// or https://",
            TemplateError::NoHost => "it has no host name",
            TemplateError::BadCharacter => "it holds spaces, quotes or control characters",
        })
    }
}

impl std::error::Error for TemplateError {}

/// Checks a server URL template: `http://` or `https://` (any case), a host, at most
/// `MAX_TEMPLATE_BYTES`, no whitespace, control characters, quotes or angle brackets.
/// `$repo` and `$arch` are allowed anywhere but not required.
pub fn validate_template(template: &str) -> Result<(), TemplateError> {
    if template.len() > MAX_TEMPLATE_BYTES {
        return Err(TemplateError::TooLong);
    }
    let rest = strip_http_scheme(template).ok_or(TemplateError::NotHttp)?;
    if template
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '<' | '>'))
    {
        return Err(TemplateError::BadCharacter);
    }
    match host_and_port(rest) {
        Some((host, _)) if !host.is_empty() => Ok(()),
        _ => Err(TemplateError::NoHost),
    }
}

/// `template` with `$repo` and `$arch` replaced, in one pass (a `$arch` inside the
/// repository name is not replaced again).
pub fn expand(template: &str, repo: &str, arch: &str) -> String {
    let mut out = String::with_capacity(template.len() + repo.len() + arch.len());
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$repo") {
            out.push_str(repo);
            rest = after;
        } else if let Some(after) = tail.strip_prefix("$arch") {
            out.push_str(arch);
            rest = after;
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Whether a template points at this host's flocon: host `localhost` (or `*.localhost`),
/// an address in 127.0.0.0/8, `::1` (bracketed or not), `::ffff:127.x.y.z`, or an
/// unspecified address, with port `local_port` (80 or 443 when the URL has none).
pub fn points_at_local_port(template: &str, local_port: u16) -> bool {
    let Some(rest) = strip_http_scheme(template) else {
        return false;
    };
    let https = template
        .as_bytes()
        .get(4)
        .is_some_and(|b| b.eq_ignore_ascii_case(&b's'));
    let Some((host, port)) = host_and_port(rest) else {
        return false;
    };
    let port = match port {
        None => {
            if https {
                443
            } else {
                80
            }
        }
        Some(text) => match text.parse::<u16>() {
            Ok(p) => p,
            Err(_) => return false,
        },
    };
    port == local_port && is_local_host(host)
}

fn strip_http_scheme(url: &str) -> Option<&str> {
    for scheme in ["http://", "https://"] {
        if url.len() >= scheme.len()
            && url.is_char_boundary(scheme.len())
            && url[..scheme.len()].eq_ignore_ascii_case(scheme)
        {
            return Some(&url[scheme.len()..]);
        }
    }
    None
}

/// Host and optional port text of the authority that starts `rest` (after `scheme://`).
fn host_and_port(rest: &str) -> Option<(&str, Option<&str>)> {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let authority = match authority.rfind('@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    if let Some(bracketed) = authority.strip_prefix('[') {
        let close = bracketed.find(']')?;
        let host = &bracketed[..close];
        let after = &bracketed[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host, port));
    }
    if authority.parse::<Ipv6Addr>().is_ok() {
        // Not valid in a URL, but say what is meant: `http://::1/`.
        return Some((authority, None));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port))),
        None => Some((authority, None)),
    }
}

fn is_local_host(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.is_loopback() || v4.is_unspecified(),
        Ok(IpAddr::V6(v6)) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
    }
}

/// The URL of a comment line `# flocon: Server = URL` (whitespace anywhere between the
/// parts; the URL ends at the first whitespace).
fn flocon_server_comment(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix('#')?.trim_start();
    let rest = rest.strip_prefix("flocon")?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix("Server")?.trim_start();
    let rest = rest.strip_prefix('=')?.trim();
    Some(rest.split_whitespace().next().unwrap_or(""))
}

/// `*` and `?` wildcard match of a file name; a leading `.` must be matched literally.
fn glob_matches(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((star_p, star_n)) = star {
            pi = star_p + 1;
            ni = star_n + 1;
            star = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn has_wildcard(text: &str) -> bool {
    text.contains(['*', '?'])
}

/// Reads pacman.conf at `path` and every file it includes into a `Reader`.
fn read_all<'a>(path: &Path, source: &'a dyn ConfigSource, local_port: u16) -> Reader<'a> {
    let mut reader = Reader {
        source,
        local_port,
        section: Section::None,
        files_read: 0,
        files_warned: false,
        cache_dirs: Vec::new(),
        architecture: None,
        db_path: None,
        repos: Vec::new(),
        repos_warned: false,
        warnings: Vec::new(),
        warnings_dropped: 0,
    };
    if let Err(e) = reader.read_file(path, 0) {
        reader.warn(format!(
            "{}: cannot read ({e}); using pacman's defaults",
            path.display()
        ));
    }
    reader
}

/// Reads pacman.conf at `path` and every file it includes. Never fails: anything it
/// cannot use becomes a warning (`"<file>:<line>: ..."`) and reading goes on; if `path`
/// itself cannot be read, the result is empty and the warning says so.
pub fn parse_pacman_conf(
    path: &Path,
    source: &dyn ConfigSource,
    local_port: u16,
) -> (PacmanConf, Vec<String>) {
    read_all(path, source, local_port).finish()
}

/// Where flocon stands in one repository section, for `flocon doctor`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub repo: String,
    /// `<file>:<line>` of the section header (its first one).
    pub header_at: String,
    /// The section's first `Server` line as pacman reads it (after `Include`s): its
    /// `<file>:<line>` and URL template, whatever it points at.
    pub first_server: Option<(String, String)>,
    /// `<file>:<line>` of a `CacheServer` line pointing at flocon, if there is one.
    pub cache_server: Option<String>,
    /// Whether the first `Server` line points at flocon.
    pub server_first: bool,
}

impl Placement {
    /// pacman asks flocon before any mirror for this repository.
    pub fn is_ok(&self) -> bool {
        self.server_first || self.cache_server.is_some()
    }
}

/// Where flocon (on `local_port`) stands in each repository of pacman.conf at `path`,
/// `Include`s followed as [`parse_pacman_conf`] follows them; and the file's warnings.
pub fn flocon_placement(
    path: &Path,
    source: &dyn ConfigSource,
    local_port: u16,
) -> (Vec<Placement>, Vec<String>) {
    let reader = read_all(path, source, local_port);
    let placements = reader
        .repos
        .iter()
        .map(|r| Placement {
            repo: r.name.clone(),
            header_at: r.header_at.clone(),
            server_first: r
                .first_server
                .as_ref()
                .is_some_and(|(_, url)| points_at_local_port(url, local_port)),
            first_server: r.first_server.clone(),
            cache_server: r.cache_server.clone(),
        })
        .collect();
    let (_, warnings) = reader.finish();
    (placements, warnings)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    /// Before any section header.
    None,
    Options,
    /// Index into `Reader::repos`.
    Repo(usize),
    /// A section that is skipped (bad name, too many repositories).
    Ignored,
}

struct RepoBuilder {
    name: String,
    header_at: String,
    first_server: Option<(String, String)>,
    cache_server: Option<String>,
    flocon_servers: Vec<String>,
    servers: Vec<String>,
    overflow_warned: bool,
}

struct Reader<'a> {
    source: &'a dyn ConfigSource,
    local_port: u16,
    /// Like pacman's, shared across includes: a header in an included file stays in
    /// effect after it.
    section: Section,
    files_read: usize,
    files_warned: bool,
    cache_dirs: Vec<PathBuf>,
    /// `Some(None)` once an `Architecture = auto` line was seen.
    architecture: Option<Option<String>>,
    db_path: Option<PathBuf>,
    repos: Vec<RepoBuilder>,
    repos_warned: bool,
    warnings: Vec<String>,
    warnings_dropped: usize,
}

impl Reader<'_> {
    fn warn(&mut self, message: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(message);
        } else {
            self.warnings_dropped += 1;
        }
    }

    fn finish(mut self) -> (PacmanConf, Vec<String>) {
        let mut repos = Vec::with_capacity(self.repos.len());
        for builder in std::mem::take(&mut self.repos) {
            let mut servers = builder.flocon_servers;
            for server in builder.servers {
                if !servers.contains(&server) {
                    servers.push(server);
                }
            }
            if servers.len() > MAX_SERVERS_PER_REPO {
                servers.truncate(MAX_SERVERS_PER_REPO);
                self.warn(format!(
                    "repository '{}': more than {MAX_SERVERS_PER_REPO} servers, the rest ignored",
                    builder.name
                ));
            }
            repos.push(Repo {
                name: builder.name,
                servers,
            });
        }
        if self.warnings_dropped > 0 {
            self.warnings.push(format!(
                "{} more warnings about pacman.conf left out",
                self.warnings_dropped
            ));
        }
        let conf = PacmanConf {
            cache_dirs: self.cache_dirs,
            architecture: self.architecture.flatten(),
            repos,
            db_path: self.db_path,
        };
        (conf, self.warnings)
    }

    /// Reads and parses one file; the error is the caller's to report.
    fn read_file(&mut self, path: &Path, depth: usize) -> io::Result<()> {
        self.files_read += 1;
        let text = self.source.read(path)?;
        self.parse_text(path, &text, depth);
        Ok(())
    }

    fn parse_text(&mut self, path: &Path, text: &str, depth: usize) {
        for (index, raw) in text.lines().enumerate() {
            let at = format!("{}:{}", path.display(), index + 1);
            if raw.len() > MAX_LINE_BYTES {
                self.warn(format!(
                    "{at}: line longer than {MAX_LINE_BYTES} bytes, ignored"
                ));
                continue;
            }
            if let Some(url) = flocon_server_comment(raw) {
                match self.section {
                    Section::Repo(i) => self.add_server(&at, i, url, true),
                    Section::Ignored => {}
                    Section::None | Section::Options => self.warn(format!(
                        "{at}: '# flocon: Server' outside a repository section, ignored"
                    )),
                }
                continue;
            }
            // pacman cuts a line at its first '#', wherever it is.
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if line.starts_with('[') {
                self.section_header(&at, line);
                continue;
            }
            let (key, value) = match line.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (line, None),
            };
            self.directive(&at, key, value, depth);
        }
    }

    fn section_header(&mut self, at: &str, line: &str) {
        let name = match line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            Some(name) if !name.is_empty() => name,
            _ => {
                self.warn(format!("{at}: malformed section header, section ignored"));
                self.section = Section::Ignored;
                return;
            }
        };
        if name == "options" {
            self.section = Section::Options;
            return;
        }
        if !valid_repo_name(name) {
            self.warn(format!(
                "{at}: repository name '{}' not usable, section ignored",
                super::options::shown(name)
            ));
            self.section = Section::Ignored;
            return;
        }
        if let Some(i) = self.repos.iter().position(|r| r.name == name) {
            self.section = Section::Repo(i);
            return;
        }
        if self.repos.len() >= MAX_REPOS {
            if !self.repos_warned {
                self.repos_warned = true;
                self.warn(format!(
                    "{at}: more than {MAX_REPOS} repositories, the rest ignored"
                ));
            }
            self.section = Section::Ignored;
            return;
        }
        self.repos.push(RepoBuilder {
            name: name.to_owned(),
            header_at: at.to_owned(),
            first_server: None,
            cache_server: None,
            flocon_servers: Vec::new(),
            servers: Vec::new(),
            overflow_warned: false,
        });
        self.section = Section::Repo(self.repos.len() - 1);
    }

    fn directive(&mut self, at: &str, key: &str, value: Option<&str>, depth: usize) {
        let value = value.filter(|v| !v.is_empty());
        match (self.section, key) {
            (Section::Ignored, _) => {}
            (Section::None, _) => {
                self.warn(format!(
                    "{at}: '{}' outside any section, ignored",
                    super::options::shown(key)
                ));
            }
            (_, "Include") => match value {
                Some(pattern) => self.include(at, pattern, depth),
                None => self.warn(format!("{at}: Include without a value, ignored")),
            },
            (Section::Options, "CacheDir") => match value {
                Some(dirs) => self.add_cache_dirs(at, dirs),
                None => self.warn(format!("{at}: CacheDir without a value, ignored")),
            },
            (Section::Options, "Architecture") => {
                // Only the first Architecture value counts.
                if self.architecture.is_none() {
                    self.set_architecture(at, value);
                }
            }
            // Like pacman, the first DBPath counts (pacman lets its command line override it).
            (Section::Options, "DBPath") => match value {
                Some(_) if self.db_path.is_some() => {}
                Some(dir) => self.db_path = Some(PathBuf::from(dir)),
                None => self.warn(format!("{at}: DBPath without a value, ignored")),
            },
            (Section::Options, "Server") => {
                self.warn(format!("{at}: Server in [options], ignored"));
            }
            (Section::Options, _) => {}
            (Section::Repo(i), "Server") => match value {
                Some(url) => {
                    if let Some(repo) = self.repos.get_mut(i) {
                        if repo.first_server.is_none() {
                            repo.first_server = Some((at.to_owned(), url.to_owned()));
                        }
                    }
                    self.add_server(at, i, url, false);
                }
                None => self.warn(format!("{at}: Server without a value, ignored")),
            },
            (Section::Repo(_), _) if value.is_none() => {
                self.warn(format!(
                    "{at}: line without '=' in a repository section, ignored"
                ));
            }
            (Section::Repo(i), "CacheServer") => {
                let local_port = self.local_port;
                if let (Some(url), Some(repo)) = (value, self.repos.get_mut(i)) {
                    if repo.cache_server.is_none() && points_at_local_port(url, local_port) {
                        repo.cache_server = Some(at.to_owned());
                    }
                }
            }
            // SigLevel, Usage, ...: not flocon's business.
            (Section::Repo(_), _) => {}
        }
    }

    fn set_architecture(&mut self, at: &str, value: Option<&str>) {
        let Some(first) = value.and_then(|v| v.split_whitespace().next()) else {
            self.warn(format!("{at}: Architecture without a value, ignored"));
            return;
        };
        if first == "auto" {
            self.architecture = Some(None);
        } else if valid_architecture(first) {
            self.architecture = Some(Some(first.to_owned()));
        } else {
            self.warn(format!(
                "{at}: Architecture '{}' not usable, ignored",
                super::options::shown(first)
            ));
        }
    }

    fn add_cache_dirs(&mut self, at: &str, dirs: &str) {
        for dir in dirs.split_whitespace() {
            let dir = PathBuf::from(dir);
            if self.cache_dirs.contains(&dir) {
                continue;
            }
            if self.cache_dirs.len() >= MAX_CACHE_DIRS {
                self.warn(format!(
                    "{at}: more than {MAX_CACHE_DIRS} CacheDir values, the rest ignored"
                ));
                return;
            }
            self.cache_dirs.push(dir);
        }
    }

    fn add_server(&mut self, at: &str, repo: usize, url: &str, flocon: bool) {
        if let Err(e) = validate_template(url) {
            let what = if flocon {
                "'# flocon: Server'"
            } else {
                "Server"
            };
            let message = match e {
                TemplateError::NotHttp => format!(
                    "{at}: {what} '{}' is not http:// or https://, not used as an upstream",
                    super::options::shown(url)
                ),
                other => format!(
                    "{at}: {what} '{}' not usable ({other}), ignored",
                    super::options::shown(url)
                ),
            };
            self.warn(message);
            return;
        }
        if points_at_local_port(url, self.local_port) {
            return;
        }
        let Some(builder) = self.repos.get_mut(repo) else {
            return;
        };
        let list = if flocon {
            &mut builder.flocon_servers
        } else {
            &mut builder.servers
        };
        if list.iter().any(|s| s == url) {
            return;
        }
        if list.len() >= MAX_SERVERS_PER_REPO {
            if !builder.overflow_warned {
                builder.overflow_warned = true;
                let name = builder.name.clone();
                self.warn(format!(
                    "{at}: more than {MAX_SERVERS_PER_REPO} servers for '{name}', the rest ignored"
                ));
            }
            return;
        }
        list.push(url.to_owned());
    }

    fn include(&mut self, at: &str, pattern: &str, depth: usize) {
        if depth >= MAX_INCLUDE_DEPTH {
            self.warn(format!(
                "{at}: Include nested deeper than {MAX_INCLUDE_DEPTH} levels, '{}' not read",
                super::options::shown(pattern)
            ));
            return;
        }
        let pattern_path = Path::new(pattern);
        let dir = pattern_path.parent().unwrap_or(Path::new(""));
        if has_wildcard(&dir.to_string_lossy()) {
            self.warn(format!(
                "{at}: Include '{}': only the last part of the path may hold * or ?, not read",
                super::options::shown(pattern)
            ));
            return;
        }
        let file_name = pattern_path.file_name().and_then(|n| n.to_str());
        let paths = match file_name {
            Some(name) if has_wildcard(name) => {
                let mut matches: Vec<PathBuf> = match self.source.list_dir(dir) {
                    Ok(entries) => entries
                        .into_iter()
                        .take(MAX_DIR_ENTRIES)
                        .filter(|p| {
                            p.file_name()
                                .and_then(|n| n.to_str())
                                .is_some_and(|n| glob_matches(name, n))
                        })
                        .collect(),
                    Err(e) => {
                        self.warn(format!(
                            "{at}: Include '{}': cannot list {} ({e})",
                            super::options::shown(pattern),
                            dir.display()
                        ));
                        return;
                    }
                };
                if matches.is_empty() {
                    self.warn(format!(
                        "{at}: Include '{}' matches no file",
                        super::options::shown(pattern)
                    ));
                    return;
                }
                matches.sort();
                matches
            }
            _ => vec![pattern_path.to_path_buf()],
        };
        for path in paths {
            if self.files_read >= MAX_FILES {
                if !self.files_warned {
                    self.files_warned = true;
                    self.warn(format!(
                        "{at}: more than {MAX_FILES} files included, '{}' and the rest not read",
                        path.display()
                    ));
                }
                return;
            }
            if let Err(e) = self.read_file(&path, depth + 1) {
                self.warn(format!(
                    "{at}: cannot read included file {} ({e})",
                    path.display()
                ));
            }
        }
    }
}

/// A repository name flocon can put in a URL path: 1 to 64 bytes, no whitespace,
/// control characters, `/` or `$`.
fn valid_repo_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '$' | '[' | ']'))
}

/// Which server templates serve which repository: either one explicit list (from
/// `--upstream`) for every repository, or pacman.conf's per-repository lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Upstreams {
    explicit: Vec<String>,
    repos: Vec<Repo>,
    /// Index of the first repository whose servers all hold `$repo` (a shared mirror
    /// list), used for repositories pacman.conf does not name.
    shared: Option<usize>,
}

impl Upstreams {
    /// The same templates for every repository.
    pub fn explicit(templates: Vec<String>) -> Upstreams {
        Upstreams {
            explicit: templates,
            repos: Vec::new(),
            shared: None,
        }
    }

    /// pacman.conf's repositories.
    pub fn from_repos(repos: Vec<Repo>) -> Upstreams {
        let shared = repos
            .iter()
            .position(|r| !r.servers.is_empty() && r.servers.iter().all(|s| s.contains("$repo")));
        Upstreams {
            explicit: Vec::new(),
            repos,
            shared,
        }
    }

    /// The templates to try for `repo`, best first: the explicit list if there is one;
    /// else the repository's own list (possibly empty); else, for a repository pacman.conf
    /// does not name, the list of the first repository that uses a shared mirror list;
    /// else nothing.
    pub fn templates_for(&self, repo: &str) -> &[String] {
        if !self.explicit.is_empty() {
            return &self.explicit;
        }
        if let Some(r) = self.repos.iter().find(|r| r.name == repo) {
            return &r.servers;
        }
        match self.shared {
            Some(i) => self.repos.get(i).map_or(&[], |r| &r.servers[..]),
            None => &[],
        }
    }

    /// The explicit list (empty when pacman.conf's lists are used).
    pub fn explicit_templates(&self) -> &[String] {
        &self.explicit
    }

    /// pacman.conf's repositories (empty when an explicit list is used).
    pub fn repos(&self) -> &[Repo] {
        &self.repos
    }

    /// No template for any repository.
    pub fn is_empty(&self) -> bool {
        self.explicit.is_empty() && self.repos.iter().all(|r| r.servers.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORT: u16 = 19433;

    fn parse(fs: &MemoryFs) -> (PacmanConf, Vec<String>) {
        parse_pacman_conf(Path::new("/etc/pacman.conf"), fs, PORT)
    }

    fn servers<'a>(conf: &'a PacmanConf, repo: &str) -> Vec<&'a str> {
        conf.repos
            .iter()
            .find(|r| r.name == repo)
            .map(|r| r.servers.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    #[test]
    fn templates() {
        let cases: &[(&str, Result<(), TemplateError>)] = &[
            ("http://mirror.example/$repo/os/$arch", Ok(())),
            ("https://mirror.example", Ok(())),
            ("HTTPS://Mirror.Example/x", Ok(())),
            ("http://[::1]:8080/$repo", Ok(())),
            ("http://user@host/x", Ok(())),
            ("ftp://mirror.example/x", Err(TemplateError::NotHttp)),
            ("file:///srv/repo", Err(TemplateError::NotHttp)),
            ("mirror.example/$repo", Err(TemplateError::NotHttp)),
            ("", Err(TemplateError::NotHttp)),
            ("http://", Err(TemplateError::NoHost)),
            ("http:///x", Err(TemplateError::NoHost)),
            ("http://:80/x", Err(TemplateError::NoHost)),
            ("http://[::1/x", Err(TemplateError::NoHost)),
            ("http://a b/x", Err(TemplateError::BadCharacter)),
            ("http://a/x\u{7}", Err(TemplateError::BadCharacter)),
        ];
        for (template, want) in cases {
            assert_eq!(validate_template(template), *want, "{template:?}");
        }
        let long = format!("http://a/{}", "x".repeat(MAX_TEMPLATE_BYTES));
        assert_eq!(validate_template(&long), Err(TemplateError::TooLong));
        assert_eq!(validate_template("httpé://x"), Err(TemplateError::NotHttp));
    }

    #[test]
    fn expansion() {
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "http://m/$repo/os/$arch",
                "core",
                "x86_64",
                "http://m/core/os/x86_64",
            ),
            (
                "http://m/$arch/$repo",
                "alarm",
                "aarch64",
                "http://m/aarch64/alarm",
            ),
            ("http://m/$repo/$repo", "a", "b", "http://m/a/a"),
            ("http://m/$other/$", "a", "b", "http://m/$other/$"),
            ("http://m/$repo", "$arch", "x", "http://m/$arch"),
            ("http://m/é$repoé", "r", "x", "http://m/éré"),
        ];
        for (template, repo, arch, want) in cases {
            assert_eq!(expand(template, repo, arch), *want);
        }
    }

    #[test]
    fn self_pointing() {
        let cases: &[(&str, bool)] = &[
            ("http://localhost:19433/$repo/os/$arch", true),
            ("http://LOCALHOST:19433/$repo", true),
            ("http://localhost.:19433/$repo", true),
            ("http://127.0.0.1:19433/$repo", true),
            ("http://127.1.2.3:19433/$repo", true),
            ("http://[::1]:19433/$repo", true),
            ("http://::1:19433/$repo", true),
            ("http://[::ffff:127.0.0.1]:19433/$repo", true),
            ("http://0.0.0.0:19433/$repo", true),
            ("http://user@localhost:19433/$repo", true),
            ("http://localhost:19433", true),
            ("http://localhost:8080/$repo", false),
            ("http://localhost/$repo", false),
            ("http://127.0.0.1:19432/$repo", false),
            ("http://[::1]/$repo", false),
            ("http://192.168.1.5:19433/$repo", false),
            ("http://mirror.example:19433/$repo", false),
            ("http://localhost:notaport/$repo", false),
            ("ftp://localhost:19433/$repo", false),
        ];
        for (template, want) in cases {
            assert_eq!(points_at_local_port(template, PORT), *want, "{template}");
        }
        assert!(points_at_local_port("http://localhost/$repo", 80));
        assert!(points_at_local_port("https://localhost/$repo", 443));
        assert!(!points_at_local_port("https://localhost/$repo", 80));
    }

    #[test]
    fn globs() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "mirrorlist", true),
            ("*", ".hidden", false),
            (".*", ".hidden", true),
            ("*.conf", "a.conf", true),
            ("*.conf", "a.conf.pacnew", false),
            ("mirror?ist", "mirrorlist", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("", "", true),
            ("x", "", false),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(glob_matches(pattern, name), *want, "{pattern} {name}");
        }
    }

    #[test]
    fn plain_pacman_conf() {
        let fs = MemoryFs::new()
            .with(
                "/etc/pacman.conf",
                "# comment\n\
                 [options]\n\
                 HoldPkg = pacman glibc\n\
                 CacheDir = /var/cache/pacman/pkg/ /srv/cache\n\
                 CacheDir = /mnt/more # trailing comment\n\
                 CacheDir = /srv/cache\n\
                 Architecture = x86_64_v3 x86_64\n\
                 Architecture = i686\n\
                 Color\n\
                 ILoveCandy\n\
                 \n\
                 [core]\n\
                 SigLevel = Required\n\
                 Server = http://localhost:19433/$repo/os/$arch\n\
                 Include = /etc/pacman.d/mirrorlist\n\
                 \n\
                 [extra]\r\n\
                 Include = /etc/pacman.d/mirrorlist\r\n\
                 [custom]\n\
                 Server = file:///home/custompkgs\n\
                 Server = https://example.org/custom\n\
                 Usage = Sync\n",
            )
            .with(
                "/etc/pacman.d/mirrorlist",
                "## Worldwide\n\
                 Server = https://geo.mirror.pkgbuild.com/$repo/os/$arch\n\
                 #Server = https://commented.example/$repo/os/$arch\n\
                 Server = https://two.example/$repo/os/$arch\n",
            );
        let (conf, warnings) = parse(&fs);
        assert_eq!(
            conf.cache_dirs,
            ["/var/cache/pacman/pkg/", "/srv/cache", "/mnt/more"]
                .map(PathBuf::from)
                .to_vec()
        );
        assert_eq!(conf.architecture.as_deref(), Some("x86_64_v3"));
        let mirrors = vec![
            "https://geo.mirror.pkgbuild.com/$repo/os/$arch",
            "https://two.example/$repo/os/$arch",
        ];
        assert_eq!(servers(&conf, "core"), mirrors);
        assert_eq!(servers(&conf, "extra"), mirrors);
        assert_eq!(servers(&conf, "custom"), vec!["https://example.org/custom"]);
        let names: Vec<&str> = conf.repos.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["core", "extra", "custom"]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("/etc/pacman.conf:20: Server 'file:///home/custompkgs'"),
            "{warnings:?}"
        );
    }

    #[test]
    fn db_path_and_sync_databases() {
        let (conf, warnings) = parse(&MemoryFs::new().with(
            "/etc/pacman.conf",
            "[options]\n[core]\nServer = https://a.example/$repo/os/$arch\n",
        ));
        assert_eq!(conf.db_path, None);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            conf.sync_database("core"),
            PathBuf::from("/var/lib/pacman/sync/core.db")
        );
        let fs = MemoryFs::new()
            .with(
                "/etc/pacman.conf",
                "[options]\n\
                 Include = /etc/pacman.d/paths.conf\n\
                 DBPath = /ignored/second/\n\
                 DBPath\n\
                 [extra]\n\
                 DBPath = /not/in/a/repository/section\n\
                 Server = https://a.example/$repo/os/$arch\n",
            )
            .with(
                "/etc/pacman.d/paths.conf",
                "DBPath = /srv/pacman db # comment\n",
            );
        let (conf, warnings) = parse(&fs);
        assert_eq!(conf.db_path, Some(PathBuf::from("/srv/pacman db")));
        assert_eq!(
            conf.sync_database("extra"),
            PathBuf::from("/srv/pacman db/sync/extra.db")
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("/etc/pacman.conf:4: DBPath without a value"),
            "{warnings:?}"
        );
        // Nothing else changes: the same file without DBPath lines parses the same.
        let without = MemoryFs::new().with(
            "/etc/pacman.conf",
            "[options]\n[extra]\nServer = https://a.example/$repo/os/$arch\n",
        );
        let (plain, _) = parse(&without);
        assert_eq!(
            PacmanConf {
                db_path: None,
                ..conf
            },
            plain
        );
    }

    #[test]
    fn architecture_auto_and_missing() {
        for (text, want) in [
            ("[options]\nArchitecture = auto\n", None),
            ("[options]\nArchitecture = auto x86_64\n", None),
            (
                "[options]\nArchitecture = auto\nArchitecture = i686\n",
                None,
            ),
            ("[options]\n", None),
            ("[options]\nArchitecture = aarch64\n", Some("aarch64")),
            (
                "[options]\nArchitecture =\nArchitecture = armv7h\n",
                Some("armv7h"),
            ),
        ] {
            let fs = MemoryFs::new().with("/etc/pacman.conf", text);
            assert_eq!(parse(&fs).0.architecture.as_deref(), want, "{text:?}");
        }
    }

    #[test]
    fn flocon_comments_come_first() {
        let fs = MemoryFs::new()
            .with(
                "/etc/pacman.conf",
                "[core]\n\
                 Server = http://first.example/$repo/os/$arch\n\
                 Include = /etc/pacman.d/mirrorlist\n\
                 #flocon:Server=http://late.example/$repo/os/$arch\n\
                 [extra]\n\
                 Include = /etc/pacman.d/mirrorlist\n\
                 [options]\n\
                 # flocon: Server = http://nowhere.example/\n",
            )
            .with(
                "/etc/pacman.d/mirrorlist",
                "Server = http://mirror.example/$repo/os/$arch\n\
                 \t#   flocon :  Server  =  http://cache.lan:8080/$repo/os/$arch   # my cache\n\
                 # flocon: Server = http://first.example/$repo/os/$arch\n\
                 # flocon: Server = http://localhost:19433/$repo/os/$arch\n\
                 # flocon: Server = ftp://x/\n\
                 # flocon: Mirror = http://not-a-server.example/\n",
            );
        let (conf, warnings) = parse(&fs);
        assert_eq!(
            servers(&conf, "core"),
            vec![
                "http://cache.lan:8080/$repo/os/$arch",
                "http://first.example/$repo/os/$arch",
                "http://late.example/$repo/os/$arch",
                "http://mirror.example/$repo/os/$arch",
            ]
        );
        assert_eq!(
            servers(&conf, "extra"),
            vec![
                "http://cache.lan:8080/$repo/os/$arch",
                "http://first.example/$repo/os/$arch",
                "http://mirror.example/$repo/os/$arch",
            ]
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("/etc/pacman.conf:8: '# flocon: Server' outside")),
            "{warnings:?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("/etc/pacman.d/mirrorlist:5: '# flocon: Server' 'ftp:")),
            "{warnings:?}"
        );
    }

    #[test]
    fn self_pointing_servers_are_left_out() {
        let fs = MemoryFs::new().with(
            "/etc/pacman.conf",
            "[core]\n\
             Server = http://localhost:19433/$repo/os/$arch\n\
             Server = http://127.0.0.1:19433/$repo/os/$arch\n\
             Server = http://[::1]:19433/$repo/os/$arch\n\
             Server = http://localhost:19434/$repo/os/$arch\n\
             Server = http://192.168.0.2:19433/$repo/os/$arch\n",
        );
        let (conf, warnings) = parse(&fs);
        assert_eq!(
            servers(&conf, "core"),
            vec![
                "http://localhost:19434/$repo/os/$arch",
                "http://192.168.0.2:19433/$repo/os/$arch",
            ]
        );
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn include_glob_sorted_and_hidden_skipped() {
        let fs = MemoryFs::new()
            .with(
                "/etc/pacman.conf",
                "[options]\nInclude = /etc/pacman.d/conf.d/*.conf\n",
            )
            .with(
                "/etc/pacman.d/conf.d/20-extra.conf",
                "[extra]\nServer = http://b/$repo\n",
            )
            .with(
                "/etc/pacman.d/conf.d/10-core.conf",
                "[core]\nServer = http://a/$repo\n",
            )
            .with("/etc/pacman.d/conf.d/.30-hidden.conf", "[hidden]\n")
            .with("/etc/pacman.d/conf.d/40-x.conf.pacnew", "[pacnew]\n");
        let (conf, warnings) = parse(&fs);
        let names: Vec<&str> = conf.repos.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["core", "extra"]);
        assert_eq!(servers(&conf, "core"), vec!["http://a/$repo"]);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn include_in_the_middle_keeps_position() {
        let fs = MemoryFs::new()
            .with(
                "/etc/pacman.conf",
                "[core]\nServer = http://a/\nInclude = /m\nServer = http://c/\n",
            )
            .with("/m", "Server = http://b/\n");
        let (conf, _) = parse(&fs);
        assert_eq!(
            servers(&conf, "core"),
            vec!["http://a/", "http://b/", "http://c/"]
        );
    }

    #[test]
    fn include_loops_are_bounded() {
        let fs = MemoryFs::new().with(
            "/etc/pacman.conf",
            "[core]\nServer = http://a/\nInclude = /etc/pacman.conf\nInclude = /etc/pacman.conf\n",
        );
        let (conf, warnings) = parse(&fs);
        assert_eq!(servers(&conf, "core"), vec!["http://a/"]);
        assert!(warnings.iter().any(|w| w.contains("nested deeper than 8")));
        assert!(warnings.iter().any(|w| w.contains("more than 64 files")));
        assert!(warnings.len() <= MAX_WARNINGS + 1);

        let fs = MemoryFs::new()
            .with("/etc/pacman.conf", "[core]\nInclude = /etc/pacman.d/*\n")
            .with("/etc/pacman.d/a", "Include = /etc/pacman.d/*\n")
            .with("/etc/pacman.d/b", "Include = /etc/pacman.conf\n");
        let (_, warnings) = parse(&fs);
        assert!(warnings.iter().any(|w| w.contains("more than 64 files")));
    }

    #[test]
    fn bad_lines_warn_with_file_and_line() {
        let fs = MemoryFs::new()
            .with(
                "/etc/pacman.conf",
                "Stray = 1\n\
                 [options\n\
                 Server = http://a/\n\
                 [core]\n\
                 Server\n\
                 JustAWord\n\
                 Include = /missing\n\
                 Include = /etc/pacman.d/*.list\n\
                 Include = /nodir/*.list\n\
                 Include = /etc/*/x\n\
                 [bad repo]\n\
                 Server = http://never/\n\
                 [extra]\n\
                 Server = http://ok/\n",
            )
            .with("/etc/pacman.d/mirrorlist", "Server = http://m/\n");
        let (conf, warnings) = parse(&fs);
        let expected = [
            "/etc/pacman.conf:1: 'Stray' outside any section",
            "/etc/pacman.conf:2: malformed section header",
            "/etc/pacman.conf:5: Server without a value",
            "/etc/pacman.conf:6: line without '='",
            "/etc/pacman.conf:7: cannot read included file /missing",
            "/etc/pacman.conf:8: Include '/etc/pacman.d/*.list' matches no file",
            "/etc/pacman.conf:9: Include '/nodir/*.list': cannot list /nodir",
            "/etc/pacman.conf:10: Include '/etc/*/x': only the last part",
            "/etc/pacman.conf:11: repository name 'bad repo' not usable",
        ];
        assert_eq!(warnings.len(), expected.len(), "{warnings:?}");
        for (warning, prefix) in warnings.iter().zip(expected) {
            assert!(warning.starts_with(prefix), "{warning:?} vs {prefix:?}");
        }
        assert_eq!(servers(&conf, "core"), Vec::<&str>::new());
        assert_eq!(servers(&conf, "extra"), vec!["http://ok/"]);
        assert!(!conf.repos.iter().any(|r| r.name == "bad repo"));
    }

    #[test]
    fn missing_pacman_conf_is_a_warning() {
        let (conf, warnings) = parse(&MemoryFs::new());
        assert_eq!(conf, PacmanConf::default());
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("/etc/pacman.conf: cannot read"));
    }

    #[test]
    fn limits() {
        let mut text = String::from("[options]\n");
        text.push_str(&format!("CacheDir = /{}\n", "x".repeat(MAX_LINE_BYTES)));
        for i in 0..MAX_REPOS + 5 {
            text.push_str(&format!("[r{i}]\n"));
        }
        text.push_str("[r0]\n");
        for i in 0..MAX_SERVERS_PER_REPO + 5 {
            text.push_str(&format!("Server = http://m{i}/\n"));
        }
        let fs = MemoryFs::new().with("/etc/pacman.conf", text);
        let (conf, warnings) = parse(&fs);
        assert!(conf.cache_dirs.is_empty());
        assert_eq!(conf.repos.len(), MAX_REPOS);
        assert_eq!(conf.repos[0].servers.len(), MAX_SERVERS_PER_REPO);
        assert!(warnings[0].contains("longer than"));
        assert!(warnings[1].contains("more than 256 repositories"));
        assert!(warnings[2].contains("more than 64 servers for 'r0'"));
        assert_eq!(warnings.len(), 3, "{warnings:?}");
    }

    #[test]
    fn repeated_section_adds_to_the_first() {
        let fs = MemoryFs::new().with(
            "/etc/pacman.conf",
            "[core]\nServer = http://a/\n[extra]\n[core]\nServer = http://b/\nServer = http://a/\n",
        );
        let (conf, _) = parse(&fs);
        assert_eq!(conf.repos.len(), 2);
        assert_eq!(servers(&conf, "core"), vec!["http://a/", "http://b/"]);
    }

    #[test]
    fn upstream_choice() {
        let repo = |name: &str, servers: &[&str]| Repo {
            name: name.to_owned(),
            servers: servers.iter().map(|s| s.to_string()).collect(),
        };
        let ups = Upstreams::from_repos(vec![
            repo("custom", &["http://c/custom"]),
            repo("local", &[]),
            repo(
                "core",
                &["http://m/$repo/os/$arch", "http://n/$repo/os/$arch"],
            ),
            repo("extra", &["http://m/$repo/os/$arch"]),
        ]);
        assert_eq!(ups.templates_for("custom"), ["http://c/custom"]);
        assert!(ups.templates_for("local").is_empty());
        assert_eq!(ups.templates_for("extra"), ["http://m/$repo/os/$arch"]);
        assert_eq!(
            ups.templates_for("multilib"),
            ["http://m/$repo/os/$arch", "http://n/$repo/os/$arch"]
        );
        assert!(!ups.is_empty());

        let none = Upstreams::from_repos(vec![repo("custom", &["http://c/custom"])]);
        assert!(none.templates_for("core").is_empty());

        let explicit = Upstreams::explicit(vec!["https://x/$repo/os/$arch".to_owned()]);
        assert_eq!(
            explicit.templates_for("anything"),
            ["https://x/$repo/os/$arch"]
        );
        assert!(Upstreams::default().is_empty());
    }

    #[test]
    fn real_fs_reads_and_lists() {
        let dir = std::env::temp_dir().join(format!("flocon-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.conf"), b"[core]\nServer = http://a/\xff\n").unwrap();
        std::fs::write(
            dir.join("pacman.conf"),
            format!("Include = {}/*.conf\n", dir.display()),
        )
        .unwrap();
        let listed = RealFs.list_dir(&dir).unwrap();
        assert_eq!(listed.len(), 2);
        let text = RealFs.read(&dir.join("a.conf")).unwrap();
        assert!(text.contains('\u{fffd}'));
        assert!(RealFs.read(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn placement_names_the_first_server_line_through_includes() {
        let fs = MemoryFs::new()
            .with(
                "/etc/pacman.conf",
                "[options]\nCacheDir = /c\n\n[core]\nInclude = /etc/pacman.d/mirrorlist\n\
                 [extra]\nCacheServer = http://localhost:19433/$repo/os/$arch\n\
                 Include = /etc/pacman.d/mirrorlist\n\
                 [local]\nServer = http://127.0.0.1:19433/$repo/os/$arch\nServer = https://m/$repo\n\
                 [empty]\nSigLevel = Never\n",
            )
            .with(
                "/etc/pacman.d/mirrorlist",
                "# flocon: Server = http://lan-mirror/$repo/os/$arch\n\
                 Server = https://mirror.example/$repo/os/$arch\n\
                 Server = http://localhost:19433/$repo/os/$arch\n",
            );
        let (placements, _) = flocon_placement(Path::new("/etc/pacman.conf"), &fs, 19433);
        let by_name = |n: &str| placements.iter().find(|p| p.repo == n).unwrap();
        let core = by_name("core");
        assert!(!core.is_ok());
        assert_eq!(core.header_at, "/etc/pacman.conf:4");
        assert_eq!(
            core.first_server,
            Some((
                "/etc/pacman.d/mirrorlist:2".to_owned(),
                "https://mirror.example/$repo/os/$arch".to_owned()
            )),
            "the '# flocon:' comment is not a Server line"
        );
        let extra = by_name("extra");
        assert!(extra.is_ok() && !extra.server_first);
        assert_eq!(extra.cache_server.as_deref(), Some("/etc/pacman.conf:7"));
        assert!(by_name("local").server_first);
        let empty = by_name("empty");
        assert!(!empty.is_ok() && empty.first_server.is_none());
        assert_eq!(empty.header_at, "/etc/pacman.conf:12");
        // Another local port: flocon is first nowhere.
        let (other, _) = flocon_placement(Path::new("/etc/pacman.conf"), &fs, 7000);
        assert!(other.iter().all(|p| !p.is_ok()));
    }
}
