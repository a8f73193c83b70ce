//! Properties of the hostlist grammar over generated input: what a fixed
//! example would not think of.

use power_proto::hostlist::{compress, count, expand};
use proptest::prelude::*;
use std::collections::BTreeSet;

/// Host names as clusters write them: a prefix, a number with or without
/// leading zeros, sometimes a suffix.
fn host_name() -> impl Strategy<Value = String> {
    "[a-z]{1,3}(0{0,2}[0-9]{1,3})?(-[a-z]{1,2}[0-9]?)?"
}

proptest! {
    /// Compressing names and expanding the result gives the same names.
    #[test]
    fn compress_then_expand_gives_the_names_back(names in prop::collection::vec(host_name(), 0..60)) {
        let compressed = compress(&names);
        let back: BTreeSet<String> = expand(&compressed, 100_000)
            .unwrap_or_else(|e| panic!("{compressed:?}: {e}"))
            .into_iter()
            .collect();
        let names: BTreeSet<String> = names.into_iter().collect();
        prop_assert_eq!(back, names, "via {}", compressed);
    }

    /// Any text: an error or names, never a panic; and never more names
    /// than the limit or than `count` says.
    #[test]
    fn any_text_expands_or_is_refused(text in "[a-z0-9\\[\\],\\-]{0,30}|\\PC{0,30}") {
        let counted = count(&text);
        if let Ok(names) = expand(&text, 1_000) {
            prop_assert!(names.len() <= 1_000);
            let distinct: std::collections::HashSet<&String> = names.iter().collect();
            prop_assert_eq!(distinct.len(), names.len(), "a name twice in {:?}", names);
            prop_assert!(counted.is_ok_and(|c| c >= names.len() as u128));
        }
    }
}
