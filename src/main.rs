//! The `power-server` binary: the library's [`power_server::run::main`].

fn main() -> std::process::ExitCode {
    power_server::run::main()
}
