//! flocon: share pacman package caches between the Arch Linux hosts of a LAN.
//!
//! The library holds every part of the daemon so that integration tests and the
//! fuzz targets can reach the pure parsers and protocol cores; `main.rs` is only
//! the command line front.

pub mod activation;
pub mod cache;
pub mod cache_watch;
pub mod config;
pub mod discovery;
pub mod doctor;
pub mod event_loop;
pub mod http;
pub mod inbound;
pub mod journal;
pub mod memory;
pub mod net;
pub mod netlink;
pub mod notify;
pub mod prng;
pub mod rate_limit;
pub mod relay;
pub mod resolver;
pub mod secret;
pub mod serve;
pub mod server;
pub mod signals;
pub mod spool;
pub mod status;
pub mod suspend;
pub mod sync_db;
pub mod trust;
