//! Hostlist expressions (TODO: being written).
