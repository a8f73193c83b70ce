//! The API's wire types: JSON:API documents as the reference power-server
//! wrote them, plus this project's added attributes.
//!
//! Compatibility rule: the reference's attributes keep their names, types
//! and meaning; new facts are only ever *added* attributes.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A power action, named as on the wire and in the driver protocol
/// (`DRIVER ACTION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Report whether the node is powered.
    Status,
    /// Power the node on.
    PowerOn,
    /// Power the node off.
    PowerOff,
    /// Power-cycle (reset) the node.
    Restart,
    /// Ask the operating system to shut down (ACPI soft off, a graceful
    /// shutdown): the first step of a graceful off, never asked alone.
    Shutdown,
}

impl Action {
    /// Every action a driver may be run with, in the order the driver
    /// protocol documents them.
    pub const ALL: [Action; 5] = [
        Action::PowerOn,
        Action::PowerOff,
        Action::Restart,
        Action::Status,
        Action::Shutdown,
    ];

    /// The actions a request asks for, each with its HTTP method.
    pub const REQUESTS: [Action; 4] = [
        Action::PowerOn,
        Action::PowerOff,
        Action::Restart,
        Action::Status,
    ];

    /// The HTTP method that asks for this action on `/`, as the reference
    /// API has it: `GET` status, `PATCH` on, `DELETE` off, `PUT` restart.
    /// A shutdown is asked as a graceful off: `DELETE` with
    /// `graceful=true`.
    pub fn method(self) -> &'static str {
        match self {
            Action::Status => "GET",
            Action::PowerOn => "PATCH",
            Action::PowerOff | Action::Shutdown => "DELETE",
            Action::Restart => "PUT",
        }
    }

    /// The action an HTTP method asks for on `/`, if any.
    pub fn from_method(method: &str) -> Option<Action> {
        Action::REQUESTS.into_iter().find(|a| a.method() == method)
    }

    /// The state the action leaves a node in (`on` after on or restart,
    /// `off` after off or shutdown); `None` for status.
    pub fn target_state(self) -> Option<PowerState> {
        match self {
            Action::PowerOn | Action::Restart => Some(PowerState::On),
            Action::PowerOff | Action::Shutdown => Some(PowerState::Off),
            Action::Status => None,
        }
    }

    /// The protocol name: `status`, `power_on`, `power_off`, `restart`,
    /// `shutdown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Status => "status",
            Action::PowerOn => "power_on",
            Action::PowerOff => "power_off",
            Action::Restart => "restart",
            Action::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown action {s:?} (expected power_on, power_off, restart, status or shutdown)"
                )
            })
    }
}

/// A node's power state as far as the server could tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    /// The status driver exited 0.
    On,
    /// The status driver exited with the platform's `status_off_exit_code`.
    Off,
    /// Anything else: the driver failed, timed out, or the node is missing.
    Unknown,
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerState::On => "on",
            PowerState::Off => "off",
            PowerState::Unknown => "unknown",
        })
    }
}

/// Why an action failed, in one word a program can act on (`error-class`
/// on the wire). A driver says the first four with a reserved exit code or
/// batch word (`docs/drivers.md`); the server says the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// The endpoint refused the credentials: retrying cannot help.
    Auth,
    /// The endpoint (BMC, API, hypervisor) could not be reached.
    Unreachable,
    /// The endpoint is busy: the server retried it; try again later.
    Busy,
    /// The platform cannot do this action.
    Unsupported,
    /// The driver overran the platform's timeout and was killed.
    Timeout,
    /// The action succeeded but the node was not seen in its target state
    /// within the wait (`?wait=`).
    Unconfirmed,
    /// The node is not in the topology.
    Missing,
    /// Anything else (and any class this side does not know yet).
    #[serde(other)]
    Failed,
}

impl ErrorClass {
    /// Every class, `failed` last.
    pub const ALL: [ErrorClass; 8] = [
        ErrorClass::Auth,
        ErrorClass::Unreachable,
        ErrorClass::Busy,
        ErrorClass::Unsupported,
        ErrorClass::Timeout,
        ErrorClass::Unconfirmed,
        ErrorClass::Missing,
        ErrorClass::Failed,
    ];

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Auth => "auth",
            ErrorClass::Unreachable => "unreachable",
            ErrorClass::Busy => "busy",
            ErrorClass::Unsupported => "unsupported",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Unconfirmed => "unconfirmed",
            ErrorClass::Missing => "missing",
            ErrorClass::Failed => "failed",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one action on one node: what the engine produces and what
/// a `commands` resource carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CommandAttributes {
    /// The action that was run.
    pub action: Action,
    /// The node's name (also the resource id).
    pub node_name: String,
    /// The node's platform; `null` for a missing node.
    pub platform: Option<String>,
    /// True exactly when the node is not in the topology.
    pub missing: bool,
    /// True exactly when the driver exited as success (for `status`: on or off).
    pub success: bool,
    /// `status` only: the node is on. Meaningful only when `success`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<bool>,
    /// Added: the power state (`status` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<PowerState>,
    /// Added: why the action failed (last line of the driver's stderr, or
    /// what the server knows: timed out, killed by signal, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Added: what kind of failure `error` is, when the action failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    /// Added: only when the request asked the server to confirm (`?wait=`)
    /// an action that succeeded: whether the node was then seen in the
    /// action's target state (`state` is the state last seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed: Option<bool>,
    /// Added: only for a graceful off (`graceful=true`): true when the
    /// node was switched off hard, because it was still on after the
    /// grace or its platform cannot shut down; false when it shut down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<bool>,
    /// Added: the driver's exit code, when it exited normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Added: how long the driver ran, in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
}

impl CommandAttributes {
    /// The result for a node the topology does not know.
    pub fn missing(action: Action, node: &str) -> Self {
        let mut result = Self::not_run(
            action,
            node,
            None,
            format!("node {node} is not in the topology"),
        );
        result.missing = true;
        result.error_class = Some(ErrorClass::Missing);
        result
    }

    /// The result for a known node whose driver was not run, and why.
    pub fn not_run(action: Action, node: &str, platform: Option<String>, error: String) -> Self {
        CommandAttributes {
            action,
            node_name: node.to_string(),
            platform,
            missing: false,
            success: false,
            running: (action == Action::Status).then_some(false),
            state: (action == Action::Status).then_some(PowerState::Unknown),
            error: Some(error),
            error_class: Some(ErrorClass::Failed),
            confirmed: None,
            fallback: None,
            exit_code: None,
            duration_ms: 0,
        }
    }
}

/// Added: what a power request would do to one node, from a dry run
/// (`?dry_run=true`), which runs nothing. A `plans` resource carries it.
///
/// Variable values are never sent: only the names the driver would get,
/// and which of them hold credentials (their values are masked as `***`
/// wherever the server reports a driver's words).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PlanAttributes {
    /// The action that would be run.
    pub action: Action,
    /// The node's name (also the resource id).
    pub node_name: String,
    /// The node's platform; `null` for a missing node.
    pub platform: Option<String>,
    /// True exactly when the node is not in the topology.
    pub missing: bool,
    /// The platform's drop-in driver, by name, or `inline` for commands
    /// written in the topology; `null` for a missing node.
    pub driver: Option<String>,
    /// The platform's driver takes nodes in chunks, on stdin.
    #[serde(default)]
    pub batch: bool,
    /// The node variables the driver would get, by name, in the platform's
    /// order (beside the protocol's own `POWER_*`).
    #[serde(default)]
    pub variables: Vec<String>,
    /// Of `variables`, those whose name looks like a credential (`pass`,
    /// `secret`, `token`, `key`, `cred`): their values are masked.
    #[serde(default)]
    pub secret_variables: Vec<String>,
    /// Variables the platform declares that the node does not set: the
    /// driver would find them unset.
    #[serde(default)]
    pub unset_variables: Vec<String>,
    /// The request, made for real, would run the node's driver.
    pub would_run: bool,
    /// Why it would not (not in the topology, in a protected group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Resource<PlanAttributes> {
    /// Wrap a plan as a `plans` resource.
    pub fn plan(attributes: PlanAttributes) -> Self {
        Resource {
            kind: "plans".into(),
            id: attributes.node_name.clone(),
            attributes,
        }
    }
}

/// Attributes of a `turns` resource: a node of a staged power-on
/// (`power_on_rate`) waiting for its turn. Sent first in an NDJSON answer
/// that asked with `turns=true`; the node's result follows as usual.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TurnAttributes {
    /// The action waiting (`power_on`).
    pub action: Action,
    /// The node.
    pub node_name: String,
    /// How long until its driver may start, in milliseconds.
    pub starts_in_ms: u64,
}

impl Resource<TurnAttributes> {
    /// Wrap a waiting node as a `turns` resource.
    pub fn turn(attributes: TurnAttributes) -> Self {
        Resource {
            kind: "turns".into(),
            id: attributes.node_name.clone(),
            attributes,
        }
    }
}

/// Attributes of a `nodes` resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAttributes {
    /// The node's name.
    pub name: String,
    /// Added: the node's platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Added: the groups the node belongs to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// Attributes of a `groups` resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupAttributes {
    /// The group's name.
    pub name: String,
    /// Its member nodes, in topology order.
    pub nodes: Vec<String>,
}

/// One JSON:API resource object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource<A> {
    /// `commands`, `nodes` or `groups`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The node or group name.
    pub id: String,
    /// The resource's attributes.
    pub attributes: A,
}

/// A JSON:API document with a list of resources as its primary data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document<A> {
    /// The resources.
    pub data: Vec<Resource<A>>,
}

impl Resource<CommandAttributes> {
    /// Wrap a command result as a `commands` resource.
    pub fn command(attributes: CommandAttributes) -> Self {
        Resource {
            kind: "commands".into(),
            id: attributes.node_name.clone(),
            attributes,
        }
    }
}

/// A JSON:API error document, as the server writes it for 4xx answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDocument {
    /// The errors (the server writes one).
    pub errors: Vec<ErrorObject>,
}

/// One JSON:API error object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// The HTTP status, as a string (JSON:API's convention).
    pub status: String,
    /// A short summary (`Forbidden`, `Bad Request`).
    pub title: String,
    /// What was wrong, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_action_has_the_reference_method_and_back() {
        let methods: Vec<&str> = Action::REQUESTS.iter().map(|a| a.method()).collect();
        assert_eq!(methods, ["PATCH", "DELETE", "PUT", "GET"]);
        assert_eq!(Action::from_method("DELETE"), Some(Action::PowerOff));
        for action in Action::REQUESTS {
            assert_eq!(Action::from_method(action.method()), Some(action));
        }
        assert_eq!(Action::from_method("POST"), None);
        assert_eq!(
            Action::from_method("get"),
            None,
            "methods are case-sensitive"
        );
    }
}
