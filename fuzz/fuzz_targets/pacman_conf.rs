//! pacman.conf with includes, on an in-memory tree: the input is split on NUL bytes into
//! /etc/pacman.conf, /etc/pacman.d/mirrorlist, /etc/pacman.d/a.conf and /etc/pacman.d/b.conf,
//! so `Include` lines and globs are followed. Every kept server is a valid template that does
//! not point at flocon's own port, and expands without a panic.
#![no_main]
use std::path::Path;

use flocon::config::{self, MemoryFs};
use libfuzzer_sys::fuzz_target;

const FILES: [&str; 4] =
    ["/etc/pacman.conf", "/etc/pacman.d/mirrorlist", "/etc/pacman.d/a.conf", "/etc/pacman.d/b.conf"];

fuzz_target!(|data: &[u8]| {
    let mut fs = MemoryFs::new();
    for (path, text) in FILES.iter().zip(data.splitn(FILES.len(), |&b| b == 0)) {
        fs.insert(*path, String::from_utf8_lossy(text));
    }
    let (conf, _warnings) = config::parse_pacman_conf(Path::new(FILES[0]), &fs, 19433);
    let arch = conf.architecture.as_deref().unwrap_or("x86_64");
    for repo in &conf.repos {
        for (i, server) in repo.servers.iter().enumerate() {
            assert_eq!(config::validate_template(server), Ok(()), "{server:?}");
            assert!(!config::points_at_local_port(server, 19433), "{server:?}");
            assert!(!repo.servers[..i].contains(server), "duplicate {server:?}");
            let _ = config::expand(server, &repo.name, arch);
        }
    }
});
