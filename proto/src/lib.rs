//! What the power server and the `power` client share: the hostlist grammar,
//! the duration grammar and the API's wire types.
//!
//! Pure: no I/O, no HTTP stack, so the client can depend on it without
//! pulling in the server.

pub mod duration;
pub mod hostlist;
pub mod result_line;
pub mod wire;
