//! Where topology fragments and drivers are looked for by default.
//!
//! Vendor directories first, the admin's after them (later wins), and the
//! checkout's own `topology.d/` and `drivers/` when the binary runs from a
//! cargo build of a checkout, so the demo works with nothing installed.

use std::path::{Path, PathBuf};

/// Packaged topology directories, lowest precedence first.
pub const SYSTEM_TOPOLOGY_DIRS: [&str; 2] = [
    "/usr/lib/power-server/topology.d",
    "/etc/power-server/topology.d",
];
/// The packaged demo topology (`power-server demo`): apart from the vendor
/// fragments, so no server serves it unless told to.
pub const SYSTEM_DEMO_DIR: &str = "/usr/share/power-server/demo";
/// Packaged drivers directories, lowest precedence first.
pub const SYSTEM_DRIVERS_DIRS: [&str; 2] =
    ["/usr/lib/power-server/drivers", "/etc/power-server/drivers"];

/// The checkout this binary was built in, if it runs from `target/<profile>/`.
pub fn checkout_root() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    checkout_of(&exe)
}

/// The checkout holding `exe`: the directory above `target/` that has a
/// `Cargo.toml` and a `topology.d/`.
fn checkout_of(exe: &Path) -> Option<PathBuf> {
    exe.ancestors()
        .skip_while(|p| p.file_name().is_none_or(|n| n != "target"))
        .nth(1)
        .filter(|root| root.join("Cargo.toml").is_file() && root.join("topology.d").is_dir())
        .map(Path::to_path_buf)
}

/// The default directories: packaged ones, then the checkout's `sub`.
pub fn defaults(system: &[&str], sub: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = system.iter().map(PathBuf::from).collect();
    if let Some(root) = checkout_root() {
        dirs.push(root.join(sub));
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cargo_build_finds_its_checkout() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "").unwrap();
        std::fs::create_dir(dir.path().join("topology.d")).unwrap();
        let exe = dir.path().join("target/debug/power-server");
        assert_eq!(checkout_of(&exe).as_deref(), Some(dir.path()));
        assert_eq!(
            checkout_of(&dir.path().join("target/debug/deps/x")).as_deref(),
            Some(dir.path())
        );
        assert_eq!(checkout_of(Path::new("/usr/bin/power-server")), None);
    }
}
