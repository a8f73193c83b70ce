//! The batch protocol's pure half: a chunk's stdin, and the driver's
//! answer lines turned into node results.
//!
//! Pure: no processes. `spawn` feeds the lines in as they arrive; the
//! [`Ledger`] decides which to trust and what the silent nodes get when the
//! run is over.

use super::interpret::{self, Exit, Outcome};
use crate::topology::Node;
use power_proto::wire::{Action, CommandAttributes, ErrorClass, PowerState};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Message of a node the driver never answered for, when it left no stderr.
pub const NO_ANSWER: &str = "no answer from driver";

/// A chunk's stdin: the header `id node VAR...`, then one line per node
/// with its id (`first_id` for the first, counting up in `nodes` order),
/// its name and its declared variables (an unset one is an empty field),
/// TAB-separated. The load has refused values holding TAB, CR, LF or NUL.
pub fn input(variables: &[String], nodes: &[&Node], first_id: usize) -> Vec<u8> {
    let mut text = String::with_capacity(64 + nodes.len() * (16 + 16 * variables.len()));
    text.push_str("id\tnode");
    for var in variables {
        text.push('\t');
        text.push_str(var);
    }
    text.push('\n');
    for (i, node) in nodes.iter().enumerate() {
        text.push_str(&(first_id + i).to_string());
        text.push('\t');
        text.push_str(&node.name);
        for var in variables {
            text.push('\t');
            text.push_str(node.variables.get(var).unwrap_or(""));
        }
        text.push('\n');
    }
    text.into_bytes()
}

/// One chunk for a persistent driver: the action alone on a line, the
/// chunk as [`input`] writes it, then an empty line that ends it. The ids
/// count on from chunk to chunk, so an answer can never be taken for one
/// of another chunk.
pub fn persistent_input(
    action: Action,
    variables: &[String],
    nodes: &[&Node],
    first_id: usize,
) -> Vec<u8> {
    let mut text = format!("{action}\n").into_bytes();
    text.extend(input(variables, nodes, first_id));
    text.push(b'\n');
    text
}

/// The words a batch driver answers a failed node with, and the class
/// each gives it: `error`, or a reserved word saying why.
pub fn word_class(word: &str) -> Option<ErrorClass> {
    match word {
        "error" => Some(ErrorClass::Failed),
        "auth" => Some(ErrorClass::Auth),
        "unreachable" => Some(ErrorClass::Unreachable),
        "busy" => Some(ErrorClass::Busy),
        "unsupported" => Some(ErrorClass::Unsupported),
        _ => None,
    }
}

/// Why an answer line was not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// Nothing but white space.
    Blank,
    /// No id and word.
    Garbled,
    /// The id was not sent in this run.
    UnknownId(String),
    /// The node has its answer already.
    Duplicate(String),
    /// The word does not fit the action.
    WrongWord(String),
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ignored::Blank => write!(f, "a blank line"),
            Ignored::Garbled => write!(f, "not an \"ID WORD [MESSAGE]\" line"),
            Ignored::UnknownId(id) => write!(f, "id {id:?} was not sent"),
            Ignored::Duplicate(node) => write!(f, "node {node} has its answer already"),
            Ignored::WrongWord(word) => write!(f, "{word:?} is not an answer to this action"),
        }
    }
}

/// One batch run's bookkeeping: which node each id names and which have
/// their answer.
#[derive(Debug)]
pub struct Ledger {
    action: Action,
    platform: String,
    first_id: usize,
    names: Vec<Arc<str>>,
    answered: Vec<bool>,
    left: usize,
    secrets: Vec<String>,
}

impl Ledger {
    /// A run of `action` on `names` (id `i + 1` is `names[i]`) of
    /// `platform`; `secrets` are masked in every message.
    pub fn new(action: Action, platform: &str, names: Vec<Arc<str>>, secrets: Vec<String>) -> Self {
        Ledger {
            action,
            platform: platform.to_string(),
            first_id: 1,
            answered: vec![false; names.len()],
            left: names.len(),
            names,
            secrets,
        }
    }

    /// Count ids from `first_id` (a persistent driver's chunks after the
    /// first).
    pub fn set_first_id(&mut self, first_id: usize) {
        self.first_id = first_id;
    }

    /// Nodes answered so far.
    pub fn answered(&self) -> usize {
        self.names.len() - self.left
    }

    /// Nodes still without an answer.
    pub fn left(&self) -> usize {
        self.left
    }

    /// The result one answer line gives its node, `elapsed` after the run
    /// started; or why the line is ignored.
    pub fn accept(&mut self, line: &[u8], elapsed: Duration) -> Result<CommandAttributes, Ignored> {
        let line = String::from_utf8_lossy(line);
        let line = line.trim();
        if line.is_empty() {
            return Err(Ignored::Blank);
        }
        let mut fields = line.splitn(3, [' ', '\t']);
        let (Some(id), Some(word)) = (fields.next(), fields.next()) else {
            return Err(Ignored::Garbled);
        };
        let message = fields.next().unwrap_or("").trim();
        let ids = self.first_id..self.first_id + self.names.len();
        let index = match id.parse::<usize>() {
            Ok(n) if ids.contains(&n) => n - self.first_id,
            _ => return Err(Ignored::UnknownId(self.mask(id))),
        };
        if self.answered[index] {
            return Err(Ignored::Duplicate(self.names[index].to_string()));
        }
        let is_status = self.action == Action::Status;
        let (success, state) = match (is_status, word) {
            (true, "on") => (true, PowerState::On),
            (true, "off") => (true, PowerState::Off),
            (false, "ok") => (true, PowerState::Unknown),
            (_, word) if word_class(word).is_some() => (false, PowerState::Unknown),
            _ => return Err(Ignored::WrongWord(self.mask(word))),
        };
        self.answered[index] = true;
        self.left -= 1;
        let failure = word_class(word).map(|class| {
            let error = match (message.is_empty(), interpret::reserved_meaning(class)) {
                (false, _) => self.mask(message),
                (true, Some(meaning)) => format!("{}: {meaning}", self.action),
                (true, None) => format!("{} failed: the driver gave no reason", self.action),
            };
            (error, class)
        });
        Ok(self.result(index, success, state, failure, None, elapsed))
    }

    /// Results for every node still without an answer once the run is
    /// over: the driver's last stderr line, or what the server knows (timed
    /// out, stopped), or [`NO_ANSWER`].
    pub fn unanswered(&self, outcome: &Outcome) -> Vec<CommandAttributes> {
        let message = self.mask(&interpret::failure(outcome, |_| NO_ANSWER.to_string()));
        let class = interpret::class_of(&outcome.exit);
        let exit_code = match outcome.exit {
            Exit::Code(c) => Some(c),
            _ => None,
        };
        (0..self.names.len())
            .filter(|&i| !self.answered[i])
            .map(|i| {
                let failure = Some((message.clone(), class));
                self.result(
                    i,
                    false,
                    PowerState::Unknown,
                    failure,
                    exit_code,
                    outcome.duration,
                )
            })
            .collect()
    }

    /// `text` with the chunk's secrets masked, cut to the error bound.
    pub fn mask(&self, text: &str) -> String {
        interpret::truncate(
            &interpret::redact(text, &self.secrets),
            interpret::MAX_ERROR_CHARS,
        )
    }

    fn result(
        &self,
        index: usize,
        success: bool,
        state: PowerState,
        failure: Option<(String, ErrorClass)>,
        exit_code: Option<i32>,
        elapsed: Duration,
    ) -> CommandAttributes {
        let (error, error_class) = failure.unzip();
        let verdict = interpret::Verdict {
            success,
            state: (self.action == Action::Status).then_some(state),
            error,
            error_class,
            exit_code,
        };
        verdict.result(self.action, &self.names[index], &self.platform, elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, vars: &[(&str, &str)]) -> Node {
        Node::sample(name, vars)
    }

    fn ledger(action: Action, n: usize) -> Ledger {
        let names = (1..=n).map(|i| format!("n{i}").into()).collect();
        Ledger::new(action, "p", names, vec!["hunter2".into()])
    }

    fn outcome(exit: Exit, stderr: &str) -> Outcome {
        Outcome {
            exit,
            stderr: stderr.as_bytes().to_vec(),
            duration: Duration::from_millis(40),
        }
    }

    #[test]
    fn input_has_a_header_then_a_line_per_node_with_empty_fields_for_unset_variables() {
        let a = node("a", &[("bmc", "10.0.0.1"), ("user", "root")]);
        let b = node("b", &[("user", "admin")]);
        let text = input(&["bmc".into(), "user".into()], &[&a, &b], 1);
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "id\tnode\tbmc\tuser\n1\ta\t10.0.0.1\troot\n2\tb\t\tadmin\n"
        );
    }

    #[test]
    fn status_answers_in_any_order_with_state_and_message() {
        let mut l = ledger(Action::Status, 3);
        let off = l.accept(b"2 off\n", Duration::from_millis(5)).unwrap();
        assert_eq!(
            (off.node_name.as_str(), off.success, off.running, off.state),
            ("n2", true, Some(false), Some(PowerState::Off))
        );
        assert_eq!(off.duration_ms, 5);
        let on = l.accept(b"1\ton\r\n", Duration::ZERO).unwrap();
        assert_eq!((on.state, on.error), (Some(PowerState::On), None));
        let bad = l
            .accept(
                b"3 error BMC 10.0.0.3: password hunter2 refused",
                Duration::ZERO,
            )
            .unwrap();
        assert_eq!(
            (bad.success, bad.state, bad.error.as_deref()),
            (
                false,
                Some(PowerState::Unknown),
                Some("BMC 10.0.0.3: password *** refused")
            )
        );
        assert_eq!(l.left(), 0);
    }

    #[test]
    fn other_actions_answer_ok_or_error() {
        let mut l = ledger(Action::PowerOff, 2);
        let ok = l.accept(b"1 ok done", Duration::ZERO).unwrap();
        assert_eq!((ok.success, ok.state, ok.running), (true, None, None));
        let bad = l.accept(b"2 error", Duration::ZERO).unwrap();
        assert_eq!(
            bad.error.as_deref(),
            Some("power_off failed: the driver gave no reason")
        );
        assert_eq!(bad.error_class, Some(ErrorClass::Failed));
    }

    #[test]
    fn reserved_words_fail_a_node_with_their_class_for_any_action() {
        let mut l = ledger(Action::Status, 4);
        let auth = l.accept(b"1 auth", Duration::ZERO).unwrap();
        assert_eq!(
            (auth.success, auth.error_class, auth.error.as_deref()),
            (
                false,
                Some(ErrorClass::Auth),
                Some("status: the endpoint refused the credentials")
            )
        );
        let busy = l
            .accept(b"2 busy locked by hunter2", Duration::ZERO)
            .unwrap();
        assert_eq!(
            (busy.error_class, busy.error.as_deref()),
            (Some(ErrorClass::Busy), Some("locked by ***"))
        );
        let far = l.accept(b"3 unreachable", Duration::ZERO).unwrap();
        assert_eq!(far.error_class, Some(ErrorClass::Unreachable));
        let mut l = ledger(Action::Restart, 1);
        let no = l
            .accept(b"1 unsupported no reset here", Duration::ZERO)
            .unwrap();
        assert_eq!(no.error_class, Some(ErrorClass::Unsupported));
    }

    #[test]
    fn unanswered_nodes_take_the_class_of_the_exit() {
        let mut l = ledger(Action::PowerOn, 2);
        l.accept(b"1 ok", Duration::ZERO).unwrap();
        let left = l.unanswered(&outcome(Exit::Code(77), "login refused"));
        assert_eq!(left.len(), 1);
        assert_eq!(
            (left[0].error_class, left[0].error.as_deref()),
            (Some(ErrorClass::Auth), Some("login refused"))
        );
        let late = ledger(Action::PowerOn, 1)
            .unanswered(&outcome(Exit::TimedOut(Duration::from_secs(1)), ""));
        assert_eq!(late[0].error_class, Some(ErrorClass::Timeout));
    }

    #[test]
    fn untrusted_lines_are_ignored_and_say_why() {
        let mut l = ledger(Action::PowerOn, 2);
        assert_eq!(l.accept(b"  \n", Duration::ZERO), Err(Ignored::Blank));
        assert_eq!(l.accept(b"1", Duration::ZERO), Err(Ignored::Garbled));
        assert_eq!(
            l.accept(b"3 ok", Duration::ZERO),
            Err(Ignored::UnknownId("3".into()))
        );
        assert_eq!(
            l.accept(b"0 ok", Duration::ZERO),
            Err(Ignored::UnknownId("0".into()))
        );
        assert_eq!(
            l.accept(b"n1 ok", Duration::ZERO),
            Err(Ignored::UnknownId("n1".into()))
        );
        // `on` answers status, not power_on.
        assert_eq!(
            l.accept(b"1 on", Duration::ZERO),
            Err(Ignored::WrongWord("on".into()))
        );
        assert!(l.accept(b"1 ok", Duration::ZERO).is_ok());
        assert_eq!(
            l.accept(b"1 error changed my mind", Duration::ZERO),
            Err(Ignored::Duplicate("n1".into()))
        );
        assert_eq!(l.left(), 1);
    }

    #[test]
    fn a_persistent_chunk_names_its_action_counts_ids_on_and_ends_with_an_empty_line() {
        let a = node("a", &[]);
        let text = persistent_input(Action::PowerOff, &[], &[&a, &a], 41);
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "power_off\nid\tnode\n41\ta\n42\ta\n\n"
        );
        let mut l = ledger(Action::PowerOff, 2);
        l.set_first_id(41);
        assert_eq!(
            l.accept(b"1 ok", Duration::ZERO),
            Err(Ignored::UnknownId("1".into()))
        );
        assert_eq!(l.accept(b"42 ok", Duration::ZERO).unwrap().node_name, "n2");
    }

    #[test]
    fn silent_nodes_get_the_last_stderr_line_or_no_answer() {
        let mut l = ledger(Action::Status, 3);
        l.accept(b"2 on", Duration::ZERO).unwrap();
        let failed = l.unanswered(&outcome(
            Exit::Code(1),
            "trying\nipmipower: hunter2 rejected\n",
        ));
        let names: Vec<&str> = failed.iter().map(|r| r.node_name.as_str()).collect();
        assert_eq!(names, ["n1", "n3"]);
        assert_eq!(failed[0].error.as_deref(), Some("ipmipower: *** rejected"));
        assert_eq!((failed[0].exit_code, failed[0].duration_ms), (Some(1), 40));
        let quiet = l.unanswered(&outcome(Exit::Code(0), ""));
        assert_eq!(quiet[1].error.as_deref(), Some(NO_ANSWER));
    }

    #[test]
    fn a_timeout_fails_only_the_silent_nodes_saying_so() {
        let mut l = ledger(Action::Restart, 2);
        l.accept(b"1 ok", Duration::ZERO).unwrap();
        let failed = l.unanswered(&outcome(Exit::TimedOut(Duration::from_secs(30)), ""));
        assert_eq!(failed.len(), 1);
        assert_eq!(
            failed[0].error.as_deref(),
            Some("timed out after 30s; driver killed")
        );
        assert_eq!(failed[0].exit_code, None);
    }
}
