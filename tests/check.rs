//! `power-server check` as an admin runs it: the real binary on real
//! directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn checkout() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `power-server check` on one topology directory and the given drivers
/// directories.
fn check(topology: &Path, drivers: &[&Path]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_power-server"));
    command.arg("check").arg("--topology-dir").arg(topology);
    for dir in drivers {
        command.arg("--drivers-dir").arg(dir);
    }
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A copy of the shipped topology.d and the demo's fragment together, to
/// break.
fn shipped_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("topology.d");
    std::fs::create_dir(&dir).unwrap();
    for shipped in ["topology.d", "demo"] {
        for entry in std::fs::read_dir(checkout().join(shipped)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    (tmp, dir)
}

/// The shipped content is usable as it is, and the report names each
/// platform's driver kind and file. (The directories are named: with a
/// `CARGO_TARGET_DIR` outside the checkout the defaults cannot find it.)
#[test]
fn the_shipped_topology_passes() {
    let out = check(
        &checkout().join("topology.d"),
        &[&checkout().join("drivers")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    for platform in ["aws", "azure", "ipmi"] {
        let line = report
            .lines()
            .find(|l| l.trim_start().starts_with(platform))
            .unwrap_or_else(|| panic!("{report}"));
        assert!(line.contains("inline"), "{line}");
        assert!(line.contains(&format!("10-{platform}.yaml:")), "{line}");
    }
    // Platforms only: the vendor fragments define no node, and say so.
    assert!(report.contains("nodes: 0"), "{report}");
    assert!(
        report.contains("the topology has no node: nothing to serve"),
        "{report}"
    );
    assert!(report.ends_with("topology OK\n"), "{report}");
}

/// The demo's topology stands alone: its own sim platform and 17 nodes.
#[test]
fn the_demo_topology_passes() {
    let out = check(&checkout().join("demo"), &[&checkout().join("drivers")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    let demo = checkout().join("demo/90-demo.yaml");
    assert!(
        report.contains(&format!(
            "driver {}",
            checkout().join("drivers/sim").display()
        )),
        "{report}"
    );
    assert!(
        report.contains(&format!("({}:", demo.display())),
        "{report}"
    );
    assert!(
        report.contains("nodes: 17 (demo[01-16],demo-broken)"),
        "{report}"
    );
    assert!(!report.contains("warnings:"), "{report}");
}

/// Nothing to serve is never silent: a named directory that does not
/// exist is an error, and a load with no node says so.
#[test]
fn a_missing_directory_or_an_empty_topology_is_loud() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nowhere");
    let out = check(&missing, &[&checkout().join("drivers")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "power-server: topology has 1 error:\n  topology directory {} does not exist\n",
            missing.display()
        )
    );
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = check(&empty, &[&checkout().join("drivers")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!(
            "the topology has no node: nothing to serve (read {})",
            empty.display()
        )),
        "{}",
        text(&out.stdout)
    );
}

/// A broken copy fails, with every error naming its file and line.
#[test]
fn a_broken_copy_fails_naming_file_and_line() {
    let (_tmp, dir) = shipped_copy();
    let demo = dir.join("90-demo.yaml");
    let original = std::fs::read_to_string(&demo).unwrap();
    std::fs::write(
        &demo,
        original.replacen("platform: sim\n", "platform: simm\n", 1),
    )
    .unwrap();
    std::fs::write(
        dir.join("50-typo.yaml"),
        "platforms:\n  p:\n    driver: sim\n    timout: 5s\n",
    )
    .unwrap();
    let drivers = checkout().join("drivers");
    let out = check(&dir, &[&drivers]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    let stderr = text(&out.stderr);
    let line = original
        .lines()
        .position(|l| l.contains("platform: sim") && !l.contains("driver"))
        .unwrap()
        + 1;
    assert!(
        stderr.starts_with("power-server: topology has 1 error:"),
        "parse errors stop before merging: {stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{}:4:5: platform p: unknown key \"timout\"",
            dir.join("50-typo.yaml").display()
        )),
        "{stderr}"
    );
    std::fs::remove_file(dir.join("50-typo.yaml")).unwrap();
    let out = check(&dir, &[&drivers]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    // The nodes of the key above that line share one error, named by it.
    let key = original
        .lines()
        .take(line - 1)
        .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.trim_end().ends_with(':'))
        .last()
        .unwrap()
        .trim()
        .trim_end_matches(':');
    assert!(
        stderr.starts_with("power-server: topology has 1 error:"),
        "one error for the whole hostlist {key}: {stderr}"
    );
    let expected = format!(
        "{}:{line}:15: nodes {key}: unknown platform \"simm\" (defined: ",
        demo.display()
    );
    let defined = stderr
        .split(&expected)
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("{stderr}"));
    let defined: Vec<&str> = defined.split(", ").collect();
    for platform in ["aws", "azure", "ipmi", "sim"] {
        assert!(defined.contains(&platform), "{platform} not in {defined:?}");
    }
    let mut sorted = defined.clone();
    sorted.sort_unstable();
    assert_eq!(defined, sorted, "the defined platforms are listed in order");
}

/// Shell syntax errors in inline commands, and drivers that are missing or
/// not executable, are caught by check, not when someone presses the button.
#[test]
fn broken_drivers_are_caught_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    let (topology, drivers) = (tmp.path().join("t"), tmp.path().join("d"));
    std::fs::create_dir_all(&topology).unwrap();
    std::fs::create_dir_all(&drivers).unwrap();
    std::fs::write(drivers.join("noexec"), "#!/bin/sh\n").unwrap();
    std::fs::write(
        topology.join("p.yaml"),
        "platforms:\n  shell:\n    status: exit 0\n    power_on: |\n      echo ok\n      if true; then\n        echo unclosed\n  \
         gone:\n    driver: nosuch\n  noexec:\n    driver: noexec\n",
    )
    .unwrap();
    let file = topology.join("p.yaml").display().to_string();
    let out = check(&topology, &[&drivers]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("topology has 3 errors"), "{stderr}");
    assert!(stderr.contains(&format!("{file}:9:13: platform gone: driver \"nosuch\" not found in the drivers directories ({})", drivers.display())), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}:11:13: platform noexec: driver {} is not executable (chmod +x it)",
            drivers.join("noexec").display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:2:3: platform shell: shell syntax error in power_on command, line "
        )),
        "{stderr}"
    );
}

/// Tools an inline command calls that are not on PATH are warned about,
/// without failing the check.
#[test]
fn missing_tools_are_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("p.yaml"),
        "platforms:\n  p:\n    status: no-such-tool-xyz status\n    power_on: true\n",
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("q.yaml"),
        "platforms:\n  q:\n    prelude: |\n      helper() {\n        other-missing-tool-xyz \"$@\"\n      }\n    status: helper status\n",
    )
    .unwrap();
    let out = check(tmp.path(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        report.contains("platform p: its commands call \"no-such-tool-xyz\", which is not on PATH"),
        "{report}"
    );
    assert!(
        report.contains(
            "platform q: its commands call \"other-missing-tool-xyz\", which is not on PATH"
        ),
        "a prelude's programs are checked: {report}"
    );
    assert!(
        !report.contains("\"helper\""),
        "a prelude's functions need nothing on PATH: {report}"
    );
}

/// `check` finds the topology where `serve` would: the environment and the
/// config file name the directories when no flag does.
#[test]
fn check_reads_the_settings_serve_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let (from_env, from_file) = (tmp.path().join("env"), tmp.path().join("file"));
    for dir in [&from_env, &from_file] {
        std::fs::create_dir(dir).unwrap();
    }
    std::fs::write(from_env.join("a.yaml"), "bogus_from_env: 1\n").unwrap();
    std::fs::write(from_file.join("a.yaml"), "bogus_from_file: 1\n").unwrap();
    let config = tmp.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("topology_dirs: [{}]\n", from_file.display()),
    )
    .unwrap();
    let run = |env: Option<&Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_power-server"));
        command.arg("check").arg("--config").arg(&config);
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("POWER_SERVER_")) {
                command.env_remove(key);
            }
        }
        if let Some(dir) = env {
            command.env("POWER_SERVER_TOPOLOGY_DIRS", dir);
        }
        text(&command.output().unwrap().stderr)
    };
    assert!(
        run(None).contains("unknown key \"bogus_from_file\""),
        "{}",
        run(None)
    );
    let stderr = run(Some(&from_env));
    assert!(
        stderr.contains("unknown key \"bogus_from_env\""),
        "the environment beats the file: {stderr}"
    );
}

/// `check` and `token` whose reader has gone (`| head -1`, `| true`) end
/// quietly with success, not with a panic on the closed pipe.
#[test]
fn a_closed_stdout_is_not_a_crash() {
    let (_tmp, dir) = shipped_copy();
    let drivers = checkout().join("drivers");
    let closed = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        writer
    };
    let mut check = Command::new(env!("CARGO_BIN_EXE_power-server"));
    check
        .args(["check", "--topology-dir"])
        .arg(&dir)
        .arg("--drivers-dir")
        .arg(&drivers);
    let mut token = Command::new(env!("CARGO_BIN_EXE_power-server"));
    token.arg("token").env(
        "POWER_SERVER_JWT_SECRET",
        "0123456789abcdef0123456789abcdef",
    );
    for command in [&mut check, &mut token] {
        let out = command.stdout(closed()).output().unwrap();
        assert!(
            out.status.success(),
            "{:?}: {}",
            out.status,
            text(&out.stderr)
        );
        assert_eq!(text(&out.stderr), "", "{command:?}");
    }
}

/// The reference's own config and topology file, moved as they are: they
/// load, with warnings and no error (docs/migrating.md). Run from their
/// directory, as the reference ran from its install directory.
#[test]
fn the_reference_config_and_topology_load_with_warnings() {
    let dir = checkout().join("tests/fixtures/reference");
    let out = Command::new(env!("CARGO_BIN_EXE_power-server"))
        .current_dir(&dir)
        .args(["check", "--config", "application.yaml", "--topology-dir"])
        .arg(checkout().join("topology.d"))
        .arg("--drivers-dir")
        .arg(checkout().join("drivers"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(report.contains("nodes: 3 (node[01-03])"), "{report}");
    for line in [
        "config file application.yaml: the `development:` section is ignored",
        "config file application.yaml: the `test:` section is ignored",
        "config file application.yaml: remote_cluster is ignored",
        "config file application.yaml: log_level: fatal is read as `error`",
        "config file application.yaml: topology_config: topology.yaml is read as one more topology fragment",
        "config file application.yaml: scripts_dir: drivers run in scripts",
    ] {
        assert!(report.contains(line), "no {line:?} in:\n{report}");
    }
    // Its platforms are its own: they replace the shipped ones of the same name.
    for platform in ["ipmi", "aws", "azure"] {
        assert!(
            report.contains("topology.yaml")
                && report.contains(&format!("platform {platform}: replaces the one at")),
            "{platform}: {report}"
        );
    }
    assert!(report.ends_with("topology OK\n"), "{report}");
}
