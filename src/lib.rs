//! power-server: a platform-agnostic cluster power manager.
//!
//! The server holds the cluster's topology ([`topology`]), turns each
//! platform into an executable driver ([`driver`]), runs drivers for nodes
//! under concurrency bounds ([`engine`]) and serves the power API
//! ([`api`], with tokens from [`auth`] and settings from [`config`]).
//! `main.rs` parses arguments, layers the settings and calls into this
//! library, so tests and benchmarks can use every part directly.

/// jemalloc: a freed topology load can be handed back to the system whole
/// ([`state`] purges after every load), where glibc's heap stays
/// fragmented by the small allocations of 100,000 nodes.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod api;
pub mod auth;
pub mod check;
pub mod config;
pub mod demo;
pub mod driver;
pub mod engine;
pub mod load;
pub mod paths;
pub mod secret;
pub mod state;
pub mod topology;

pub use power_proto::{hostlist, wire};
