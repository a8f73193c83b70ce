//! Node and action to an invocation: program, argument and environment.
//!
//! Pure. Values reach the driver as environment variables only; nothing is
//! ever spliced into shell text.

use crate::topology::{Node, Platform};
use power_proto::wire::Action;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Everything needed to run a driver once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The driver executable.
    pub program: PathBuf,
    /// Its one argument.
    pub action: Action,
    /// Its whole environment (the child's environment is cleared first).
    pub env: Vec<(OsString, OsString)>,
    /// What it reads on stdin: a batch run's node lines; `None` is
    /// `/dev/null`, as for every per-node run.
    pub stdin: Option<Vec<u8>>,
    /// How long it may run.
    pub timeout: Duration,
    /// The directory it runs in; the server's own when `None`.
    pub dir: Option<PathBuf>,
}

/// The protocol's own variables: never inherited from the server.
const PROTOCOL: [&str; 4] = [
    "POWER_ACTION",
    "POWER_NODE",
    "POWER_PLATFORM",
    "POWER_BATCH",
];

/// Does an inherited variable belong to the server alone? Its settings
/// (`POWER_SERVER_*`, the JWT secret among them) never reach a driver, nor
/// does `BASH_ENV`/`ENV`, which would make every bash driver source a file.
pub fn is_server_private(name: &str) -> bool {
    name.starts_with("POWER_SERVER_") || name == "BASH_ENV" || name == "ENV"
}

/// Plan one run: the inherited environment, minus anything named like a
/// declared variable, plus the node's declared variables, plus the
/// protocol's `POWER_ACTION`, `POWER_NODE`, `POWER_PLATFORM`.
pub fn plan(
    inherited: &[(OsString, OsString)],
    program: PathBuf,
    platform: &Platform,
    node: &Node,
    action: Action,
) -> Invocation {
    let mut env = base_env(inherited, platform);
    for var in &platform.variables {
        if let Some(value) = node.variables.get(var) {
            env.push((var.into(), value.into()));
        }
    }
    env.push(("POWER_ACTION".into(), action.as_str().into()));
    env.push(("POWER_NODE".into(), (*node.name).into()));
    env.push(("POWER_PLATFORM".into(), platform.name.clone().into()));
    Invocation {
        program,
        action,
        env,
        stdin: None,
        timeout: platform.run.timeout,
        dir: None,
    }
}

/// Plan one batch run for `nodes` (a chunk of one batch platform): the
/// inherited environment less every declared variable's name, plus
/// `POWER_BATCH=1`, `POWER_ACTION` and `POWER_PLATFORM`; the nodes go on
/// stdin as [`super::batch::input`] writes them.
pub fn plan_batch(
    inherited: &[(OsString, OsString)],
    program: PathBuf,
    platform: &Platform,
    nodes: &[&Node],
    action: Action,
) -> Invocation {
    let mut env = base_env(inherited, platform);
    env.push(("POWER_BATCH".into(), "1".into()));
    env.push(("POWER_ACTION".into(), action.as_str().into()));
    env.push(("POWER_PLATFORM".into(), platform.name.clone().into()));
    Invocation {
        program,
        action,
        env,
        stdin: Some(super::batch::input(&platform.variables, nodes, 1)),
        timeout: platform.run.timeout,
        dir: None,
    }
}

/// The environment of a persistent driver (`DRIVER serve`): as a batch
/// run's, with `POWER_PERSISTENT=1` and no `POWER_ACTION` (each chunk
/// names its action).
pub fn persistent_env(
    inherited: &[(OsString, OsString)],
    platform: &Platform,
) -> Vec<(OsString, OsString)> {
    let mut env = base_env(inherited, platform);
    env.push(("POWER_BATCH".into(), "1".into()));
    env.push(("POWER_PERSISTENT".into(), "1".into()));
    env.push(("POWER_PLATFORM".into(), platform.name.clone().into()));
    env
}

/// The inherited environment less the protocol's variables and every
/// variable the platform declares: a declared variable a node lacks is
/// unset rather than inherited, so a server-side value of the same name
/// can never stand in for it.
fn base_env(inherited: &[(OsString, OsString)], platform: &Platform) -> Vec<(OsString, OsString)> {
    let overridden = |k: &OsString| {
        k.to_str()
            .is_some_and(|k| PROTOCOL.contains(&k) || platform.variables.iter().any(|v| v == k))
    };
    inherited
        .iter()
        .filter(|(k, _)| !overridden(k))
        .cloned()
        .collect()
}

/// What a variable's name holds, in any case, when its value is a
/// credential.
const HINTS: [&str; 5] = ["pass", "secret", "token", "key", "cred"];

/// Does a variable's name say its value is a credential (`ipmi_password`,
/// `api_key`)? Such values are masked wherever a run is reported.
pub fn looks_secret(name: &str) -> bool {
    HINTS.iter().any(|h| contains_ignoring_case(name, h))
}

/// Values of a node's variables that look like credentials, to be masked in
/// anything logged or returned (a driver may echo its inputs on error).
pub fn secrets(node: &Node) -> Vec<String> {
    node.variables
        .iter()
        .filter(|(k, v)| !v.is_empty() && HINTS.iter().any(|h| contains_ignoring_case(k, h)))
        .map(|(_, v)| v.to_string())
        .collect()
}

/// Does `name` hold `hint` (lower case), in any case? Without allocating:
/// a batch run asks it of every variable of every node of the chunk.
fn contains_ignoring_case(name: &str, hint: &str) -> bool {
    name.as_bytes()
        .windows(hint.len())
        .any(|w| w.eq_ignore_ascii_case(hint.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{DriverSpec, Location, RunSettings};
    use std::collections::BTreeMap;

    fn here() -> Location {
        Location {
            file: "t.yaml".into(),
            line: 1,
            column: 1,
        }
    }

    fn platform(vars: &[&str]) -> Platform {
        Platform {
            name: "p".into(),
            defined_at: here(),
            variables: vars.iter().map(ToString::to_string).collect(),
            serialize_by: None,
            run: RunSettings {
                driver: DriverSpec::Inline {
                    prelude: None,
                    commands: BTreeMap::new(),
                },
                status_off_exit_code: 111,
                timeout: Duration::from_secs(5),
                confirm: None,
                power_on_rate: None,
                concurrency: None,
                batch: None,
                persistent: false,
                processes: None,
            },
        }
    }

    fn node(vars: &[(&str, &str)]) -> Node {
        Node::sample("n1", vars)
    }

    fn get<'a>(inv: &'a Invocation, k: &str) -> Vec<&'a OsString> {
        inv.env
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v)
            .collect()
    }

    #[test]
    fn only_declared_variables_are_passed() {
        let n = node(&[("name", "n1"), ("bmc", "10.0.0.1"), ("secret_extra", "x")]);
        let inv = plan(
            &[],
            "/d".into(),
            &platform(&["name", "bmc"]),
            &n,
            Action::Status,
        );
        assert_eq!(get(&inv, "bmc"), vec!["10.0.0.1"]);
        assert_eq!(get(&inv, "name"), vec!["n1"]);
        assert!(get(&inv, "secret_extra").is_empty());
        assert_eq!(get(&inv, "POWER_ACTION"), vec!["status"]);
        assert_eq!(get(&inv, "POWER_NODE"), vec!["n1"]);
        assert_eq!(get(&inv, "POWER_PLATFORM"), vec!["p"]);
    }

    #[test]
    fn declared_but_absent_variables_do_not_inherit_the_servers_value() {
        let inherited = vec![
            ("region".into(), "server-side".into()),
            ("HOME".into(), "/root".into()),
        ];
        let inv = plan(
            &inherited,
            "/d".into(),
            &platform(&["region"]),
            &node(&[]),
            Action::PowerOn,
        );
        assert!(get(&inv, "region").is_empty());
        assert_eq!(get(&inv, "HOME"), vec!["/root"]);
    }

    #[test]
    fn protocol_variables_cannot_be_inherited_twice() {
        let inherited = vec![("POWER_NODE".into(), "spoof".into())];
        let inv = plan(
            &inherited,
            "/d".into(),
            &platform(&[]),
            &node(&[]),
            Action::PowerOff,
        );
        assert_eq!(get(&inv, "POWER_NODE"), vec!["n1"]);
    }

    #[test]
    fn server_settings_are_private() {
        assert!(is_server_private("POWER_SERVER_JWT_SECRET"));
        assert!(is_server_private("BASH_ENV"));
        assert!(!is_server_private("POWER_SIM_DIR"));
        assert!(!is_server_private("PATH"));
    }

    #[test]
    fn credential_like_values_are_secrets() {
        let n = node(&[
            ("ipmi_password", "hunter2"),
            ("api_token", "t0k"),
            ("bmc", "h"),
            ("empty_pass", ""),
        ]);
        let mut s = secrets(&n);
        s.sort();
        assert_eq!(s, vec!["hunter2", "t0k"]);
    }
}
