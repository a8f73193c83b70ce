//! The shipped `azure` platform (`topology.d/10-azure.yaml`) through the
//! real server and the real `power` client.
//!
//! Azure has no emulator that runs here, so this is the one platform test
//! with a stand-in: `tests/fixtures/az/az`, first on the server's `PATH`,
//! records each call's argv and answers as the real CLI does (output, error
//! text, exit codes), keeping each VM's power state in a file. The tests
//! pin the exact `az` command lines the platform runs.

use super::{
    assert_graceful, driver_actions, graceful_off, power_rows, shipped, start_server, Row,
};
use crate::support::{self, Server};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The resource group the test VMs are in.
const RG: &str = "cluster-rg";

/// The stand-in's world: its VMs, its argv log, the CLI's config dir.
struct Azure {
    dir: tempfile::TempDir,
}

impl Azure {
    /// VMs as `(resource group, name, state)`; logged in or not.
    fn new(vms: &[(&str, &str, &str)], logged_in: bool) -> Azure {
        let dir = tempfile::Builder::new()
            .prefix("power-az")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir(dir.path().join("azure")).unwrap();
        if logged_in {
            std::fs::write(
                dir.path().join("azure/azureProfile.json"),
                r#"{"subscriptions": [{"id": "00000000-0000-0000-0000-000000000000", "isDefault": true}]}"#,
            )
            .unwrap();
        }
        for (group, name, state) in vms {
            let group_dir = dir.path().join("vms").join(group);
            std::fs::create_dir_all(&group_dir).unwrap();
            std::fs::write(group_dir.join(name), format!("{state}\n")).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("vms")).unwrap();
        Azure { dir }
    }

    fn argv_log(&self) -> PathBuf {
        self.dir.path().join("argv.log")
    }

    /// The calls made since the last look, sorted (nodes run in parallel).
    fn take_calls(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.argv_log()).unwrap_or_default();
        let _ = std::fs::remove_file(self.argv_log());
        let mut calls: Vec<String> = text.lines().map(str::to_string).collect();
        calls.sort();
        calls
    }

    /// A VM's power state as the stand-in keeps it.
    fn state(&self, group: &str, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("vms").join(group).join(name))
            .expect("VM state file")
            .trim()
            .to_string()
    }

    /// Start a server with the shipped fragment and `nodes` (YAML under
    /// `static_nodes:`), the stand-in first on its PATH.
    fn server(&self, nodes: &str) -> Server {
        let stand_in = support::checkout().join("tests/fixtures/az");
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![stand_in];
        paths.extend(std::env::split_paths(&path));
        let env: [(&str, OsString); 5] = [
            ("PATH", std::env::join_paths(paths).unwrap()),
            ("AZ_STANDIN_ARGV_LOG", self.argv_log().into()),
            ("AZ_STANDIN_VMS", self.dir.path().join("vms").into()),
            ("AZURE_CONFIG_DIR", self.dir.path().join("azure").into()),
            ("HOME", self.dir.path().into()),
        ];
        start_server(
            "10-azure.yaml",
            &[],
            &format!("static_nodes:\n{nodes}"),
            env,
        )
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The status command line the platform runs for VM `name`.
fn status_call(name: &str) -> String {
    format!(
        "az vm get-instance-view --resource-group {RG} --name {name} \
         --query instanceView.statuses\\[1\\].code --output json"
    )
}

/// Each action runs the reference's `az vm` command line with the node's
/// resource group and name (and `--subscription` only when the node sets
/// one); running is on, stopped and deallocated are off, and a state in
/// between is unknown, saying which.
#[test]
fn azure_actions_run_the_reference_commands_and_status_maps_states() {
    let azure = Azure::new(
        &[
            (RG, "vm1", "running"),
            (RG, "vm2", "stopped"),
            (RG, "vm3", "deallocated"),
            (RG, "vm4", "starting"),
            (RG, "vm5", "running"),
        ],
        true,
    );
    let server = azure.server(&format!(
        "  vm[1-4]:\n    platform: azure\n    resource_group: {RG}\n\
         \x20 vm5:\n    platform: azure\n    resource_group: {RG}\n    azure_subscription: research\n"
    ));
    let token = server.token(&["--role", "operator"]);

    let (status, rows) = power_rows(&server, &token, &["status", "vm[1-4]"]);
    assert_eq!(
        rows,
        [
            Row::ok("vm1", Some("on")),
            Row::ok("vm2", Some("off")),
            Row::ok("vm3", Some("off")),
            Row::failed(
                "vm4",
                Some("unknown"),
                "VM vm4 is PowerState/starting: neither running nor stopped"
            ),
        ],
        "server log:\n{}",
        server.log()
    );
    assert!(!status.success());
    assert_eq!(
        azure.take_calls(),
        ["vm1", "vm2", "vm3", "vm4"].map(status_call)
    );

    let (status, rows) = power_rows(&server, &token, &["off", "vm1"]);
    assert_eq!(rows, [Row::ok("vm1", None)]);
    assert!(status.success());
    assert_eq!(
        azure.take_calls(),
        [format!("az vm stop --resource-group {RG} --name vm1")]
    );
    assert_eq!(azure.state(RG, "vm1"), "stopped");

    let (status, rows) = power_rows(&server, &token, &["on", "vm[2-3]"]);
    assert_eq!(rows, [Row::ok("vm2", None), Row::ok("vm3", None)]);
    assert!(status.success());
    assert_eq!(
        azure.take_calls(),
        [
            format!("az vm start --resource-group {RG} --name vm2"),
            format!("az vm start --resource-group {RG} --name vm3"),
        ]
    );
    assert_eq!(azure.state(RG, "vm2"), "running");
    assert_eq!(azure.state(RG, "vm3"), "running");

    let (status, rows) = power_rows(&server, &token, &["restart", "vm1"]);
    assert_eq!(rows, [Row::ok("vm1", None)]);
    assert!(status.success());
    assert_eq!(
        azure.take_calls(),
        [format!("az vm restart --resource-group {RG} --name vm1")]
    );
    assert_eq!(azure.state(RG, "vm1"), "running");

    // A node naming a subscription passes it on; its status is on.
    let (status, rows) = power_rows(&server, &token, &["off", "vm5"]);
    assert_eq!(rows, [Row::ok("vm5", None)]);
    assert!(status.success());
    let (status, rows) = power_rows(&server, &token, &["status", "vm5"]);
    assert_eq!(rows, [Row::ok("vm5", Some("off"))]);
    assert!(status.success());
    assert_eq!(
        azure.take_calls(),
        [
            format!(
                "az vm get-instance-view --resource-group {RG} --name vm5 \
                 --subscription research --query instanceView.statuses\\[1\\].code --output json"
            ),
            format!("az vm stop --resource-group {RG} --name vm5 --subscription research"),
        ]
    );
}

/// The platform has no `shutdown` (`az vm stop` is already Azure's own
/// stop, which asks the guest first): a graceful off is `unsupported` at
/// once (no az call) and goes straight to `az vm stop`, a fallback.
#[test]
fn azure_graceful_off_goes_straight_to_az_vm_stop() {
    let yaml: serde_yaml::Value = serde_yaml::from_str(&shipped("10-azure.yaml")).unwrap();
    assert!(
        yaml["platforms"]["azure"]["shutdown"].is_null(),
        "the azure platform has no shutdown command"
    );
    let azure = Azure::new(&[(RG, "vm1", "running")], true);
    let server = azure.server(&format!(
        "  vm1:\n    platform: azure\n    resource_group: {RG}\n"
    ));
    let token = server.token(&["--role", "operator"]);
    let r = graceful_off(&server, &token, "vm1", "1m");
    assert_graceful(&r, "vm1", true);
    assert_eq!(azure.state(RG, "vm1"), "stopped");
    assert_eq!(
        azure.take_calls(),
        [format!("az vm stop --resource-group {RG} --name vm1")]
    );
    assert_eq!(driver_actions(&server, "vm1"), ["shutdown", "power_off"]);
}

/// A VM or resource group Azure does not know fails with the CLI's own
/// last line (exit 3), never success.
#[test]
fn azure_unknown_vm_or_resource_group_fails_saying_so() {
    let azure = Azure::new(&[(RG, "vm1", "running")], true);
    let server = azure.server(&format!(
        "  ghost:\n    platform: azure\n    resource_group: {RG}\n\
         \x20 lost:\n    platform: azure\n    resource_group: no-such-rg\n"
    ));
    let token = server.token(&["--role", "operator"]);
    let not_found = format!(
        "Message: The Resource 'Microsoft.Compute/virtualMachines/ghost' under resource group \
         '{RG}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
    );
    let no_group = "Message: Resource group 'no-such-rg' could not be found.";

    let (status, rows) = power_rows(&server, &token, &["status", "ghost", "lost"]);
    assert_eq!(
        rows,
        [
            Row::failed("ghost", Some("unknown"), &not_found),
            Row::failed("lost", Some("unknown"), no_group),
        ],
        "server log:\n{}",
        server.log()
    );
    assert!(!status.success());

    let (status, rows) = power_rows(&server, &token, &["on", "ghost", "lost"]);
    assert_eq!(
        rows,
        [
            Row::failed("ghost", None, &not_found),
            Row::failed("lost", None, no_group),
        ]
    );
    assert!(!status.success());
    assert_eq!(azure.take_calls().len(), 4);
}

/// A CLI that is not logged in fails every action with its own advice,
/// and nothing changes.
#[test]
fn azure_not_logged_in_fails_saying_so() {
    let azure = Azure::new(&[(RG, "vm1", "running")], false);
    let server = azure.server(&format!(
        "  vm1:\n    platform: azure\n    resource_group: {RG}\n"
    ));
    let token = server.token(&["--role", "operator"]);
    let login = "ERROR: Please run 'az login' to setup account.";

    let (status, rows) = power_rows(&server, &token, &["status", "vm1"]);
    assert_eq!(rows, [Row::failed("vm1", Some("unknown"), login)]);
    assert!(!status.success());
    let (status, rows) = power_rows(&server, &token, &["off", "vm1"]);
    assert_eq!(rows, [Row::failed("vm1", None, login)]);
    assert!(!status.success());
    assert_eq!(azure.state(RG, "vm1"), "running");
    assert!(azure.dir().join("azure").is_dir());
    // Classed as auth (exit 77), so the server never retries it.
    azure.take_calls();
    let results = super::api_results(&server, &token, "PATCH", "vm1");
    super::assert_class(&results, "vm1", "auth", &["az login"]);
    assert_eq!(results["vm1"]["exit-code"], 77);
    assert_eq!(azure.take_calls().len(), 1, "tried once");
}
