//! The `power` binary: everything is in the library, so tests can reach it.

fn main() -> std::process::ExitCode {
    power_client::run(std::env::args_os())
}
