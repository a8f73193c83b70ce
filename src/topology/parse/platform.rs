//! The platform part of a fragment: a platform's keys, its driver and its
//! batch modes, and the typed values they take.
//!
//! Each key is checked alone first, then the keys are checked against
//! each other.

use super::{At, DriverSpec, Parser, PlatformDef, RunSettings};
use super::{DEFAULT_BATCH_MAX, DEFAULT_STATUS_OFF_EXIT_CODE, DEFAULT_TIMEOUT};
use crate::topology::diagnostic::{Diagnostic, Location};
use crate::topology::yaml::{Mapping, Node, Scalar};
use power_proto::wire::Action;
use std::collections::BTreeMap;
use std::time::Duration;

/// A platform's keys as written, before they are checked against each other.
#[derive(Default)]
struct PlatformKeys {
    variables: Vec<At<String>>,
    commands: BTreeMap<Action, String>,
    prelude: Option<String>,
    driver: Option<At<String>>,
    status_off_exit_code: Option<i32>,
    timeout: Option<Duration>,
    confirm: Option<Duration>,
    power_on_rate: Option<crate::pace::Rate>,
    concurrency: Option<usize>,
    serialize_by: Option<At<String>>,
    batch: bool,
    batch_max: Option<(usize, Location)>,
    persistent: Option<(bool, Location)>,
    processes: Option<(usize, Location)>,
}

impl Parser<'_> {
    pub(super) fn platform(&mut self, key: &Scalar, value: &Node) -> Option<PlatformDef> {
        let label = format!("platform {:?}", key.as_str());
        // Names reach logs, the API and the generated driver's messages:
        // the group-name rules keep every one of them plain.
        if !is_group_name(key.as_str()) || key.as_str().starts_with(['-', '.']) {
            self.error(
                key.span(),
                format!("{label}: a platform name is letters, digits, '-', '_' and '.' only, not starting with '-' or '.'"),
            );
            return None;
        }
        let label = format!("platform {}", key.as_str());
        let map = self.mapping(value, &label, "variables, commands or driver")?;
        let keys = self.platform_keys(&label, map);
        let driver = self.driver_spec(key, &label, keys.driver, keys.prelude, keys.commands)?;
        if let Some(var) = &keys.serialize_by {
            if !keys.variables.iter().any(|v| v.value == var.value) {
                self.error(
                    key.span(),
                    format!(
                        "{label}: serialize_by names {:?}, which is not one of its variables",
                        var.value
                    ),
                );
            }
        }
        let (batch, persistent, processes) = self.batch_modes(
            &label,
            keys.batch,
            keys.batch_max,
            keys.persistent,
            keys.processes,
        );
        Some(PlatformDef {
            name: self.at(key),
            variables: keys.variables,
            serialize_by: keys.serialize_by,
            run: RunSettings {
                driver,
                status_off_exit_code: keys
                    .status_off_exit_code
                    .unwrap_or(DEFAULT_STATUS_OFF_EXIT_CODE),
                timeout: keys.timeout.unwrap_or(DEFAULT_TIMEOUT),
                confirm: keys.confirm,
                power_on_rate: keys.power_on_rate,
                concurrency: keys.concurrency,
                batch,
                persistent,
                processes,
            },
        })
    }

    /// A platform's keys as written, each checked alone; unknown keys are
    /// errors naming the ones it takes.
    fn platform_keys(&mut self, label: &str, map: &Mapping) -> PlatformKeys {
        let mut keys = PlatformKeys::default();
        for (k, v) in map.iter() {
            let what = format!("{label}: {}", k.as_str());
            match k.as_str() {
                "variables" => {
                    keys.variables = self.strings(v, &what);
                    for var in &keys.variables {
                        if let Err(e) = check_variable_name(&var.value) {
                            self.errors.push(Diagnostic::at(&var.at, format!("{what}: {:?}: {e}", var.value)));
                        }
                    }
                }
                "power_on" | "power_off" | "restart" | "status" | "shutdown" => {
                    if let Some(s) = self.scalar(v, &what) {
                        let action = k.as_str().parse::<Action>().expect("matched an action name");
                        keys.commands.insert(action, s.as_str().to_string());
                    }
                }
                "prelude" => keys.prelude = self.scalar(v, &what).map(|s| s.as_str().to_string()),
                "driver" => keys.driver = self.scalar(v, &what).map(|s| self.at(s)),
                "status_off_exit_code" => keys.status_off_exit_code = self.typed(v, &what, exit_code),
                "timeout" => keys.timeout = self.typed(v, &what, parse_duration),
                "confirm" => keys.confirm = self.typed(v, &what, parse_duration),
                "power_on_rate" => keys.power_on_rate = self.typed(v, &what, crate::pace::Rate::parse),
                "concurrency" => keys.concurrency = self.typed(v, &what, at_least_one),
                "serialize_by" => keys.serialize_by = self.scalar(v, &what).map(|s| self.at(s)),
                "batch" => keys.batch = self.typed(v, &what, boolean).unwrap_or(false),
                "batch_max" => keys.batch_max = self.typed(v, &what, at_least_one).map(|n| (n, self.loc(v.span()))),
                "persistent" => keys.persistent = self.typed(v, &what, boolean).map(|p| (p, self.loc(v.span()))),
                "processes" => keys.processes = self.typed(v, &what, at_least_one).map(|n| (n, self.loc(v.span()))),
                other => self.error(
                    k.span(),
                    format!(
                        "{label}: unknown key {other:?} (expected variables, prelude, power_on, power_off, \
                         restart, status, shutdown, driver, status_off_exit_code, timeout, confirm, power_on_rate, \
                         concurrency, serialize_by, batch, batch_max, persistent or processes)"
                    ),
                ),
            }
        }
        keys
    }

    /// Batch, persistent and processes, checked against each other: each
    /// needs the one before it. Returns the batch size (`None`: not batch),
    /// whether persistent, and the processes asked for.
    fn batch_modes(
        &mut self,
        label: &str,
        batch: bool,
        batch_max: Option<(usize, Location)>,
        persistent: Option<(bool, Location)>,
        processes: Option<(usize, Location)>,
    ) -> (Option<usize>, bool, Option<usize>) {
        let batch = match (batch, batch_max) {
            (true, max) => Some(max.map_or(DEFAULT_BATCH_MAX, |(n, _)| n)),
            (false, None) => None,
            (false, Some((_, at))) => {
                self.errors.push(Diagnostic::at(
                    &at,
                    format!(
                        "{label}: batch_max is only for a batch platform (add \"batch: true\")"
                    ),
                ));
                None
            }
        };
        let persistent = match persistent {
            Some((true, at)) if batch.is_none() => {
                let message = format!(
                    "{label}: persistent is only for a batch platform (add \"batch: true\")"
                );
                self.errors.push(Diagnostic::at(&at, message));
                false
            }
            Some((p, _)) => p,
            None => false,
        };
        let processes = match processes {
            Some((_, at)) if !persistent => {
                let message = format!(
                    "{label}: processes is only for a persistent platform (add \"persistent: true\")"
                );
                self.errors.push(Diagnostic::at(&at, message));
                None
            }
            processes => processes.map(|(n, _)| n),
        };
        (batch, persistent, processes)
    }

    /// A scalar parsed by `parse`; its error is reported at the value as `what: error`.
    fn typed<T>(
        &mut self,
        value: &Node,
        what: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let s = self.scalar(value, what)?;
        parse(s.as_str())
            .map_err(|e| self.error(s.span(), format!("{what}: {e}")))
            .ok()
    }

    /// Inline commands or a drop-in driver: exactly one of the two.
    fn driver_spec(
        &mut self,
        key: &Scalar,
        label: &str,
        driver: Option<At<String>>,
        prelude: Option<String>,
        commands: BTreeMap<Action, String>,
    ) -> Option<DriverSpec> {
        let problem = match (driver, commands.is_empty()) {
            (None, false) => return Some(DriverSpec::Inline { prelude, commands }),
            (Some(name), true) if prelude.is_none() => return Some(DriverSpec::DropIn(name)),
            (Some(name), true) => format!(
                "{label}: a prelude goes with inline commands, not with \"driver: {}\"",
                name.value
            ),
            (Some(name), false) => format!(
                "{label}: gives both \"driver: {}\" and inline commands; use one or the other",
                name.value
            ),
            (None, true) => format!(
                "{label}: no commands (expected power_on, power_off, restart and status, or driver: NAME)"
            ),
        };
        self.error(key.span(), problem);
        None
    }
}

/// Node variables become environment variables of the driver, so their
/// names must be valid ones, and must not replace what the server or the
/// dynamic loader relies on.
pub fn check_variable_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err("not a valid environment variable name (letters, digits and '_', not starting with a digit)".into());
    }
    if name == "PATH" || name.starts_with("LD_") || name.starts_with("POWER_") || name == "BASH_ENV"
    {
        return Err(
            "would shadow PATH, LD_*, POWER_* or BASH_ENV in the driver's environment".into(),
        );
    }
    Ok(())
}

/// Group names are used in `?groups=` hostlists, so they follow node-name rules.
pub fn is_group_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn exit_code(text: &str) -> Result<i32, String> {
    let reserved = crate::driver::interpret::RESERVED_EXITS;
    match text.parse::<i32>() {
        Ok(code) if reserved.iter().any(|(c, _, _)| *c == code) => Err(format!(
            "exit code {code} is reserved for a driver to say why it failed (68, 69, 75 \
             and 77: see docs/drivers.md); choose another"
        )),
        Ok(code) if (1..=255).contains(&code) => Ok(code),
        _ => Err(format!(
            "expected an exit code from 1 to 255, found {text:?}"
        )),
    }
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "expected a whole number of at least 1, found {text:?}"
        )),
    }
}

fn boolean(text: &str) -> Result<bool, String> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("expected true or false, found {text:?}")),
    }
}

/// `90s`, `2m`, `1m 30s`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    match power_proto::duration::parse(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("expected a duration above zero".to_string()),
        Err(e) => Err(format!(
            "expected a duration such as 90s or 2m, found {text:?} ({e})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn platform_settings_are_read() {
        let f = parse_ok(
            "platforms:\n  pdu:\n    driver: sim\n    variables: [outlet, pdu_host]\n    timeout: 2m\n    \
             concurrency: 4\n    serialize_by: pdu_host\n    status_off_exit_code: 2\n",
        );
        let p = &f.platforms[0];
        assert_eq!(p.run.timeout, Duration::from_secs(120));
        assert_eq!(p.run.concurrency, Some(4));
        assert_eq!(p.run.status_off_exit_code, 2);
        assert_eq!(p.serialize_by.as_ref().unwrap().value, "pdu_host");
        assert!(
            matches!(&p.run.driver, DriverSpec::DropIn(d) if d.value == "sim" && d.at.line == 3)
        );
    }

    #[test]
    fn platform_names_are_plain() {
        for bad in ["'q\"; touch /tmp/x; echo \"'", "\"\"", "-rf", "a b"] {
            let e = one_error(&format!("platforms:\n  {bad}:\n    driver: d\n"));
            assert!(
                e.starts_with("t.yaml:2:3: platform ")
                    && e.ends_with("not starting with '-' or '.'"),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            parse_ok("platforms:\n  ipmi-2_x.y:\n    driver: d\n")
                .platforms
                .len(),
            1
        );
    }

    #[test]
    fn batch_platforms_default_to_256_nodes_a_run() {
        let f = parse_ok(
            "platforms:\n  a:\n    driver: sim\n    batch: true\n  b:\n    driver: sim\n    batch: true\n    \
             batch_max: 1000\n  c:\n    driver: sim\n    batch: false\n",
        );
        let batch: Vec<Option<usize>> = f.platforms.iter().map(|p| p.run.batch).collect();
        assert_eq!(batch, [Some(DEFAULT_BATCH_MAX), Some(1000), None]);
        assert_eq!(
            one_error("platforms:\n  p:\n    driver: d\n    batch: yes\n"),
            "t.yaml:4:12: platform p: batch: expected true or false, found \"yes\""
        );
        assert_eq!(
            one_error("platforms:\n  p:\n    driver: d\n    batch_max: 10\n"),
            "t.yaml:4:16: platform p: batch_max is only for a batch platform (add \"batch: true\")"
        );
        assert_eq!(
            one_error("platforms:\n  p:\n    driver: d\n    batch: true\n    batch_max: 0\n"),
            "t.yaml:5:16: platform p: batch_max: expected a whole number of at least 1, found \"0\""
        );
        assert_eq!(
            one_error("platforms:\n  p:\n    driver: d\n    persistent: true\n"),
            "t.yaml:4:17: platform p: persistent is only for a batch platform (add \"batch: true\")"
        );
        let f =
            parse_ok("platforms:\n  p:\n    driver: d\n    batch: true\n    persistent: true\n");
        assert!(f.platforms[0].run.persistent);
        assert_eq!(
            one_error("platforms:\n  p:\n    driver: d\n    batch: true\n    processes: 2\n"),
            "t.yaml:5:16: platform p: processes is only for a persistent platform (add \"persistent: true\")"
        );
        let f = parse_ok(
            "platforms:\n  p:\n    driver: d\n    batch: true\n    persistent: true\n    processes: 3\n",
        );
        assert_eq!(f.platforms[0].run.processes, Some(3));
    }

    #[test]
    fn variable_names_must_be_environment_names_that_shadow_nothing() {
        for (name, why) in [
            ("1abc", "not a valid environment variable name"),
            ("bmc-host", "not a valid environment variable name"),
            ("PATH", "would shadow"),
            ("LD_PRELOAD", "would shadow"),
            ("POWER_NODE", "would shadow"),
        ] {
            let e = one_error(&format!(
                "static_nodes:\n  n1:\n    platform: p\n    {name}: x\n"
            ));
            assert!(
                e.starts_with(&format!("t.yaml:4:5: node n1: variable {name}: ")),
                "{e}"
            );
            assert!(e.contains(why), "{e}");
            let e = one_error(&format!(
                "platforms:\n  p:\n    driver: d\n    variables: [ok, {name}]\n"
            ));
            assert!(
                e.starts_with(&format!("t.yaml:4:21: platform p: variables: \"{name}\": ")),
                "{e}"
            );
        }
    }

    #[test]
    fn platform_value_errors_say_what_was_expected() {
        let cases = [
            ("status_off_exit_code: 0", "t.yaml:4:27: platform p: status_off_exit_code: expected an exit code from 1 to 255, found \"0\""),
            ("status_off_exit_code: abc", "t.yaml:4:27: platform p: status_off_exit_code: expected an exit code from 1 to 255, found \"abc\""),
            ("status_off_exit_code: 77", "t.yaml:4:27: platform p: status_off_exit_code: exit code 77 is reserved for a driver to say why it failed (68, 69, 75 and 77: see docs/drivers.md); choose another"),
            ("concurrency: 0", "t.yaml:4:18: platform p: concurrency: expected a whole number of at least 1, found \"0\""),
            ("timeout: 0s", "t.yaml:4:14: platform p: timeout: expected a duration above zero"),
        ];
        for (line, expected) in cases {
            assert_eq!(
                one_error(&format!("platforms:\n  p:\n    driver: d\n    {line}\n")),
                expected
            );
        }
        let e = one_error("platforms:\n  p:\n    driver: d\n    timeout: soon\n");
        assert!(e.starts_with("t.yaml:4:14: platform p: timeout: expected a duration such as 90s or 2m, found \"soon\""), "{e}");
    }

    #[test]
    fn a_prelude_goes_with_inline_commands() {
        let f = parse_ok("platforms:\n  p:\n    prelude: |\n      f() { :; }\n    status: f\n");
        assert!(matches!(&f.platforms[0].run.driver,
            DriverSpec::Inline { prelude: Some(p), commands } if p == "f() { :; }\n" && commands.len() == 1));
        assert_eq!(
            one_error("platforms:\n  p:\n    driver: sim\n    prelude: x=1\n"),
            "t.yaml:2:3: platform p: a prelude goes with inline commands, not with \"driver: sim\""
        );
        assert_eq!(
            one_error("platforms:\n  p:\n    prelude: x=1\n"),
            "t.yaml:2:3: platform p: no commands (expected power_on, power_off, restart and status, or driver: NAME)"
        );
    }

    #[test]
    fn a_platform_needs_exactly_one_kind_of_driver() {
        assert_eq!(
            one_error("platforms:\n  p:\n    variables: [a]\n"),
            "t.yaml:2:3: platform p: no commands (expected power_on, power_off, restart and status, or driver: NAME)"
        );
        assert_eq!(
            one_error("platforms:\n  p:\n    driver: sim\n    status: exit 0\n"),
            "t.yaml:2:3: platform p: gives both \"driver: sim\" and inline commands; use one or the other"
        );
        assert_eq!(
            one_error(
                "platforms:\n  p:\n    driver: sim\n    variables: [a]\n    serialize_by: b\n"
            ),
            "t.yaml:2:3: platform p: serialize_by names \"b\", which is not one of its variables"
        );
    }
}
