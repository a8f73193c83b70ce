//! Drivers: the executables that do the hardware talking.
//!
//! `generate` turns inline commands into scripts (pure), `build` makes every
//! platform's executable ready (I/O), `plan` decides argv, environment and
//! stdin (pure), `spawn` runs one (processes), `interpret` turns its exit
//! into a result (pure), `batch` encodes a chunk's stdin and decodes its
//! answer lines (pure), `persistent` keeps a batch driver running between
//! chunks (processes).

pub mod batch;
pub mod build;
pub mod generate;
pub mod interpret;
pub mod orphans;
pub mod persistent;
pub mod plan;
pub mod spawn;

pub use build::{build, Driver, DriverKind, Drivers};
pub use interpret::{interpret, Exit, Outcome};
pub use plan::{plan, plan_batch, Invocation};
