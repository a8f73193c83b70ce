//! Integration tests: one binary, one module per area. They run the real
//! `power-server` and `power` binaries and real driver executables.

mod api;
mod batch;
mod check;
mod client;
mod core;
mod follow_up;
mod platforms;
mod support;
