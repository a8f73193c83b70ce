//! A large fragment cut into pieces that parse alone, side by side.
//!
//! Pure. A 100,000-node file is almost all `static_nodes` entries, and
//! YAML is read one character at a time, so one core parses it while the
//! others wait. In block style every entry of `static_nodes` starts on a
//! line indented exactly as the first one, and nothing else does: the
//! lines of a value (nested keys, block scalars, continued or quoted
//! scalars, flow collections) must be indented more. Cut at such lines,
//! each piece (after the first given a `static_nodes:` line of its own)
//! is a document that reads as its part of the file, at the same lines
//! and columns.
//!
//! Only the plain shape is cut; anything else is parsed whole, as before:
//! a file under [`MIN_BYTES`], TAB or CR characters, anchors or aliases
//! (`&`, `*`) anywhere, document markers or directives, a `static_nodes`
//! that is not a block mapping at column 0, or a line in it indented less
//! than its entries. A key given twice across pieces is still an error,
//! reported by the merge as a node defined twice.

/// Files smaller than this are parsed whole: cutting would not pay.
pub const MIN_BYTES: usize = 256 * 1024;

/// One piece: its text, and the file's line number of its first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece<'a> {
    /// The first piece is a slice of the file; the others carry their own
    /// `static_nodes:` line before it.
    pub text: std::borrow::Cow<'a, str>,
    /// The file's line number of the piece's first line.
    pub first_line: usize,
}

/// `text` cut into at most `count` pieces of about equal size, or `None`
/// when it should be parsed whole.
pub fn pieces(text: &str, count: usize) -> Option<Vec<Piece<'_>>> {
    if count < 2 || text.len() < MIN_BYTES || !plain(text) {
        return None;
    }
    let starts = entry_starts(text)?;
    // The cut points: entry starts nearest to each equal share of the text.
    let mut cuts = Vec::new();
    for k in 1..count {
        let target = text.len() * k / count;
        let i = starts.partition_point(|&(offset, _)| offset < target);
        if let Some(&cut) = starts.get(i) {
            if cuts.last().is_none_or(|&(last, _)| cut.0 > last) && cut != starts[0] {
                cuts.push(cut);
            }
        }
    }
    if cuts.is_empty() {
        return None;
    }
    let mut out = vec![Piece {
        text: text[..cuts[0].0].into(),
        first_line: 1,
    }];
    for (i, &(offset, line)) in cuts.iter().enumerate() {
        let end = cuts.get(i + 1).map_or(text.len(), |&(next, _)| next);
        out.push(Piece {
            text: format!("static_nodes:\n{}", &text[offset..end]).into(),
            // The added line stands just before the piece's first entry.
            first_line: line - 1,
        });
    }
    Some(out)
}

/// No character that could tie one piece to another or change how lines
/// are counted.
fn plain(text: &str) -> bool {
    // A byte search each (memchr) beats one pass over the characters.
    let bytes = text.as_bytes();
    !b"\t\r&*%".iter().any(|b| bytes.contains(b))
        && !text.starts_with("---")
        && !text.contains("\n---")
        && !text.contains("\n...")
}

/// The byte offset and line number of each `static_nodes` entry's line,
/// if the section is a plain block mapping.
fn entry_starts(text: &str) -> Option<Vec<(usize, usize)>> {
    let mut starts = Vec::new();
    let mut in_section = false;
    let mut indent = None;
    let mut offset = 0;
    for (number, line) in text.split_inclusive('\n').enumerate() {
        let here = offset;
        offset += line.len();
        let content = line.trim_start_matches(' ');
        let blank = content.trim_end().is_empty() || content.starts_with('#');
        if blank {
            continue;
        }
        let depth = line.len() - content.len();
        if depth == 0 {
            if in_section {
                break;
            }
            let key = content.trim_end();
            let key = key.split_once(" #").map_or(key, |(k, _)| k).trim_end();
            in_section = key == "static_nodes:";
            continue;
        }
        if !in_section {
            continue;
        }
        match indent {
            None if content.starts_with(['-', '?', '{', '[']) => return None,
            None => indent = Some(depth),
            Some(entries) if depth < entries => return None,
            _ => {}
        }
        if Some(depth) == indent {
            // A key, as every entry starts with; else something this cut
            // does not understand (say a quoted value carried on).
            let key = content.trim_end().ends_with(':') || content.contains(": ");
            if !key {
                return None;
            }
            starts.push((here, number + 1));
        }
    }
    (starts.len() > 1).then_some(starts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn big(entries: usize) -> String {
        let mut text = String::from("# nodes\nplatforms:\n  p:\n    driver: d\nstatic_nodes:\n");
        for i in 0..entries {
            text.push_str(&format!(
                "  n{i:06}:\n    platform: p\n    note: |\n      two\n      lines\n"
            ));
        }
        text.push_str("groups:\n  g: n000001\n");
        text
    }

    #[test]
    fn pieces_start_at_entries_and_keep_their_lines() {
        let text = big(20_000);
        let pieces = pieces(&text, 3).expect("cut");
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces[0].first_line, 1);
        assert!(text.starts_with(&*pieces[0].text));
        let mut rebuilt = pieces[0].text.to_string();
        for piece in &pieces[1..] {
            let rest = piece
                .text
                .strip_prefix("static_nodes:\n")
                .expect("own header");
            assert!(rest.starts_with("  n"), "{:?}", &rest[..20]);
            // Its first entry stands at first_line + 1 in the file.
            let line = text.lines().nth(piece.first_line).unwrap();
            assert_eq!(line, rest.lines().next().unwrap());
            rebuilt.push_str(rest);
        }
        assert_eq!(rebuilt, text, "nothing lost or repeated");
        assert!(pieces[2].text.ends_with("groups:\n  g: n000001\n"));
    }

    #[test]
    fn anything_unusual_is_parsed_whole() {
        let text = big(20_000);
        assert!(pieces(&text, 1).is_none());
        assert!(pieces(&big(10), 2).is_none(), "small files");
        for odd in ["\t", "&a", "*a", "\n---\n", "\r", "%YAML"] {
            let text = text.replacen("    platform: p\n", &format!("    platform: p{odd}\n"), 1);
            assert!(pieces(&text, 2).is_none(), "{odd:?}");
        }
        let flow = text.replace("static_nodes:\n", "static_nodes: {}\nx:\n");
        assert!(pieces(&flow, 2).is_none());
        let list = text.replace("static_nodes:\n  n000000:", "static_nodes:\n  - n000000:");
        assert!(pieces(&list, 2).is_none());
        let shallow = text.replacen("    platform: p\n", " platform: p\n", 1);
        assert!(
            pieces(&shallow, 2).is_none(),
            "a line indented less than the entries"
        );
        let carried = text.replacen("  n000005:\n", "  n000005: \"a\n  b\"\n", 1);
        assert!(
            pieces(&carried, 2).is_none(),
            "a line at the entries' depth, not a key"
        );
    }
}
