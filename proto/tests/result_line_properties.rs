//! The fast result line against serde over generated results: the bytes
//! written are serde's, and a line read fast reads as serde reads it.

use power_proto::result_line::{read, write};
use power_proto::wire::{Action, CommandAttributes, ErrorClass, PowerState, Resource};
use proptest::prelude::*;

fn action() -> impl Strategy<Value = Action> {
    prop::sample::select(Action::ALL.to_vec())
}

fn class() -> impl Strategy<Value = ErrorClass> {
    prop::sample::select(ErrorClass::ALL.to_vec())
}

fn state() -> impl Strategy<Value = PowerState> {
    prop::sample::select(vec![PowerState::On, PowerState::Off, PowerState::Unknown])
}

/// Names as clusters have them, and now and then any text at all.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![4 => "[a-z][a-z0-9._-]{0,12}", 1 => "\\PC{0,12}", 1 => any::<String>()]
}

prop_compose! {
    fn result()(
        action in action(),
        node_name in text(),
        platform in prop::option::of(text()),
        (missing, success) in (any::<bool>(), any::<bool>()),
        running in prop::option::of(any::<bool>()),
        state in prop::option::of(state()),
        error in prop::option::of(text()),
        error_class in prop::option::of(class()),
        confirmed in prop::option::of(any::<bool>()),
        fallback in prop::option::of(any::<bool>()),
        exit_code in prop::option::of(any::<i32>()),
        duration_ms in any::<u64>(),
    ) -> CommandAttributes {
        CommandAttributes {
            action, node_name, platform, missing, success, running, state, error,
            error_class, confirmed, fallback, exit_code, duration_ms,
        }
    }
}

fn serde_read(line: &[u8]) -> Option<CommandAttributes> {
    serde_json::from_slice::<Resource<CommandAttributes>>(line)
        .ok()
        .map(|r| r.attributes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// What `write` writes is byte for byte what serde writes, and reads
    /// back as the result (fast, or through serde when a string needed an
    /// escape).
    #[test]
    fn writes_serde_bytes_and_reads_them_back(result in result()) {
        let mut line = Vec::new();
        write(&mut line, &result);
        let expected = serde_json::to_vec(&Resource::command(result.clone())).unwrap();
        prop_assert_eq!(&line, &expected);
        match read(&line) {
            Some(fast) => prop_assert_eq!(fast, result),
            None => prop_assert!(
                String::from_utf8_lossy(&line).contains('\\'),
                "declined a line without an escape: {}", String::from_utf8_lossy(&line)
            ),
        }
    }

    /// A line changed at random: whatever `read` accepts, serde reads the
    /// same way.
    #[test]
    fn accepts_nothing_serde_reads_otherwise(
        result in result(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
    ) {
        let mut line = Vec::new();
        write(&mut line, &result);
        for (at, byte, how) in edits {
            let at = at.index(line.len() + 1);
            match how {
                0 => line.insert(at, byte),
                1 if at < line.len() => { line.remove(at); }
                _ if at < line.len() => line[at] = byte,
                _ => line.push(byte),
            }
        }
        if let Some(fast) = read(&line) {
            prop_assert_eq!(Some(fast), serde_read(&line), "{}", String::from_utf8_lossy(&line));
        }
    }
}
