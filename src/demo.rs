//! `power-server demo`: the quick start. A server on loopback with the
//! shipped demo topology (`demo/`) and its simulated nodes, a fresh secret
//! that lives only as long as the server, and a ready token with the
//! commands to try.
//!
//! This module works out settings and words (it reads only the checkout's
//! location); `main` runs the server.

use crate::auth::{self, Claims, Keys};
use crate::config::Settings;
use crate::load::LoadSettings;
use crate::paths;
use crate::secret::Secret;
use crate::topology::Topology;
use power_proto::hostlist;
use std::path::{Path, PathBuf};

/// How long the demo token lasts.
pub const TOKEN_DAYS: u64 = 1;

/// The shipped demo topology and drivers: the checkout's when run from
/// one, the packaged ones otherwise. The admin's own directories are left
/// out, so the demo looks the same everywhere; its directory must exist.
pub fn load_settings() -> LoadSettings {
    let shipped = |sub: &str, packaged: &str| match paths::checkout_root() {
        Some(root) => vec![root.join(sub)],
        None => vec![PathBuf::from(packaged)],
    };
    LoadSettings {
        topology_dirs: shipped("demo", paths::SYSTEM_DEMO_DIR),
        drivers_dirs: shipped("drivers", paths::SYSTEM_DRIVERS_DIRS[0]),
        runtime_dir: None,
        topology_named: true,
        topology_files: Vec::new(),
        protected_groups: Vec::new(),
    }
}

/// A full-access token for the demo, for one day.
pub fn token(settings: &Settings, secret: &Secret) -> String {
    let now = auth::now();
    Keys::new(secret, settings.hostlist_limit).mint(&Claims {
        exp: now + TOKEN_DAYS * 86_400,
        iat: Some(now),
        sub: Some("demo".into()),
        role: None,
        nodes: None,
    })
}

/// What to print once the demo server listens at `url`. `client` is the
/// `power` binary next to the server's: `Ok` if it exists, `Err` if not yet.
pub fn instructions(
    url: &str,
    token: &str,
    topology: &Topology,
    sim_dir: &Path,
    client: Result<&Path, &Path>,
) -> String {
    let nodes = hostlist::compress(topology.nodes().iter().map(|n| &n.name));
    let groups: Vec<&str> = topology.groups.keys().map(String::as_str).collect();
    let client = match client {
        Ok(path) => format!("  alias power={}\n", path.display()),
        Err(path) => {
            let release = path.parent().and_then(Path::file_name) == Some("release".as_ref());
            format!(
                "  # build the client first: cargo build{} -p power-client\n  alias power={}\n",
                if release { " --release" } else { "" },
                path.display()
            )
        }
    };
    format!(
        "\
Demo server ready: {count} simulated nodes ({nodes}) in groups {groups}.
Their power state lives in {sim}. Ctrl-C stops the server.

In another terminal:

{client}  export POWER_URL={url}
  export POWER_TOKEN={token}

  power list
  power list --groups --verbose
  power status 'demo[01-04]'
  power on 'demo[01-04]'
  power status --groups rack1
  power off --groups even
  power on demo-broken      # fails: its driver simulates a fault

Or with curl:

  curl -g -H \"Authorization: Bearer $POWER_TOKEN\" '{url}/?nodes=demo[01-04]'
  curl -g -X PATCH -H \"Authorization: Bearer $POWER_TOKEN\" '{url}/?groups=rack1'
",
        count = topology.nodes().len(),
        groups = groups.join(", "),
        sim = sim_dir.display(),
    )
}
