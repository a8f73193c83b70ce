//! The plain shape of a topology file, read line by line.
//!
//! Pure. Most topology files, and every large one, are block mappings of
//! one-line values: `key: value` lines nested by indentation, a value
//! plain or quoted. yaml-rust2 reads any YAML a character at a time
//! through a token queue; for a 100,000-node file that was half of the
//! load. [`read`] walks the lines instead and gives the tree builder the
//! events yaml-rust2 would, at the same lines and columns.
//!
//! The shape is narrow on purpose: a list, a flow collection, an anchor,
//! a tag, a block scalar, an escape or a doubled quote in a quoted value,
//! a TAB, a CR, text that is not ASCII, a value carried onto the next line
//! or anything else unusual makes it give up, and the caller parses the
//! text with yaml-rust2. A property test holds the events of every text it
//! accepts equal to yaml-rust2's.

use super::yaml::Span;
use yaml_rust2::parser::Event;
use yaml_rust2::scanner::TScalarStyle;

/// The longest key read here: YAML limits a simple key to 1,024
/// characters, and a key near that is not worth the care.
const KEY_MAX: usize = 1000;

/// Give `emit` the events of `text`, positions within `text`, and return
/// true; or return false, part way or not, when `text` is not of the
/// plain shape (the events given so far are then to be thrown away).
pub fn read(text: &str, emit: &mut impl FnMut(Event, Span)) -> bool {
    // A byte search each (memchr) beats one pass over the characters.
    let bytes = text.as_bytes();
    if !text.is_ascii() || bytes.contains(&b'\t') || bytes.contains(&b'\r') {
        return false;
    }
    // The indentation of each open mapping, outermost first.
    let mut open: Vec<usize> = Vec::new();
    // A key read with no value on its line: a nested mapping follows, or
    // its value is empty.
    let mut waiting = false;
    let mut lines = 0;
    for (index, line) in text.split('\n').enumerate() {
        let number = index + 1;
        lines = number;
        let content = line.trim_start_matches(' ');
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let indent = line.len() - content.len();
        let Some(entry) = Entry::of(content, indent) else {
            return false;
        };
        let here = Span {
            line: number,
            column: indent + 1,
        };
        // yaml-rust2 places a mapping where its first key ends.
        let mapping = Span {
            line: number,
            column: indent + entry.key.len() + 1,
        };
        match open.last() {
            None => {
                // The document's top mapping starts at the first key.
                if indent != 0 {
                    return false;
                }
                emit(Event::StreamStart, here);
                emit(Event::DocumentStart, here);
                emit(Event::MappingStart(0, None), mapping);
                open.push(0);
            }
            Some(&parent) if waiting && indent > parent => {
                emit(Event::MappingStart(0, None), mapping);
                open.push(indent);
                waiting = false;
            }
            Some(_) => {
                if waiting {
                    // yaml-rust2 puts an empty value where the next key starts.
                    emit(empty(), here);
                    waiting = false;
                }
                while open.last().is_some_and(|&inner| indent < inner) {
                    emit(Event::MappingEnd, here);
                    open.pop();
                }
                // Deeper than its mapping (a value carried on) or between
                // two levels: not this shape.
                if open.last() != Some(&indent) {
                    return false;
                }
            }
        }
        emit(scalar(entry.key, TScalarStyle::Plain), here);
        match entry.value {
            Some((value, style, column)) => emit(
                scalar(value, style),
                Span {
                    line: number,
                    column,
                },
            ),
            None => waiting = true,
        }
    }
    if open.is_empty() {
        // No key at all: an empty or comment-only text, yaml-rust2's to read.
        return false;
    }
    // yaml-rust2 closes what is open on the line after the last.
    let end = Span {
        line: lines + usize::from(!text.ends_with('\n')),
        column: 1,
    };
    if waiting {
        if !text.ends_with('\n') {
            // `key:` at the very end: not worth a rule of its own.
            return false;
        }
        emit(empty(), end);
    }
    for _ in &open {
        emit(Event::MappingEnd, end);
    }
    emit(Event::DocumentEnd, end);
    emit(Event::StreamEnd, end);
    true
}

/// One `key: value` or `key:` line.
struct Entry<'a> {
    key: &'a str,
    /// The value and its 1-based column, if the line has one.
    value: Option<(&'a str, TScalarStyle, usize)>,
}

impl<'a> Entry<'a> {
    /// `content` (a line without its `indent` spaces) as an entry, if it is
    /// one of the plain shape. One pass over its bytes: this runs for
    /// every line of a file.
    fn of(content: &'a str, indent: usize) -> Option<Self> {
        let bytes = content.as_bytes();
        // The key: a name, an address or a hostlist (`cn[001-100]`),
        // nothing YAML could take for an indicator.
        if !bytes.first()?.is_ascii_alphanumeric() && bytes[0] != b'_' {
            return None;
        }
        let colon = bytes
            .iter()
            .position(|&b| !(b.is_ascii_alphanumeric() || b"_-.[],/".contains(&b)))?;
        if bytes[colon] != b':' || colon > KEY_MAX {
            return None;
        }
        let key = &content[..colon];
        let mut at = colon + 1;
        let spaces = bytes[at..].iter().take_while(|&&b| b == b' ').count();
        if spaces == 0 && at < bytes.len() {
            // `key:value` is one scalar, not an entry.
            return None;
        }
        at += spaces;
        match bytes.get(at) {
            None | Some(b'#') => return Some(Entry { key, value: None }),
            Some(&quote @ (b'\'' | b'"')) => return Self::quoted(key, bytes, at, quote, indent),
            // The value starts with a letter, digit, `_`, `.` or `/`.
            Some(b) if b.is_ascii_alphanumeric() || b"_./".contains(b) => {}
            Some(_) => return None,
        }
        // It holds printable ASCII and no `:` that ends a word (YAML would
        // take it for a key), up to the end or a `#` after a space.
        let mut end = at;
        for (i, &b) in bytes.iter().enumerate().skip(at) {
            let next = bytes.get(i + 1);
            match b {
                b' ' if next == Some(&b'#') => break,
                b' ' => continue,
                b':' if next.is_none_or(|&n| n == b' ') => return None,
                b'!'..=b'~' => end = i + 1,
                _ => return None,
            }
        }
        Some(Entry {
            key,
            value: Some((&content[at..end], TScalarStyle::Plain, indent + at + 1)),
        })
    }

    /// The entry of `key` whose value is quoted with `quote`, starting at
    /// `at` in `bytes`: a password often is. Only what reads as written
    /// (no escape, no doubled quote, no line break inside), followed by
    /// nothing but spaces and a comment.
    fn quoted(key: &'a str, bytes: &'a [u8], at: usize, quote: u8, indent: usize) -> Option<Self> {
        let inside = &bytes[at + 1..];
        let close = inside
            .iter()
            .position(|&b| b == quote || b == b'\\' || !(b' '..=b'~').contains(&b))?;
        if inside[close] != quote {
            return None;
        }
        let after = &inside[close + 1..];
        let spaces = after.iter().take_while(|&&b| b == b' ').count();
        match after.get(spaces) {
            None => {}
            Some(b'#') if spaces > 0 => {}
            _ => return None,
        }
        let style = if quote == b'"' {
            TScalarStyle::DoubleQuoted
        } else {
            TScalarStyle::SingleQuoted
        };
        // Printable ASCII: the bytes are a str.
        let value = std::str::from_utf8(&inside[..close]).ok()?;
        Some(Entry {
            key,
            value: Some((value, style, indent + at + 1)),
        })
    }
}

fn scalar(value: &str, style: TScalarStyle) -> Event {
    Event::Scalar(value.to_string(), style, 0, None)
}

fn empty() -> Event {
    scalar("", TScalarStyle::Plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use yaml_rust2::parser::{MarkedEventReceiver, Parser};
    use yaml_rust2::scanner::Marker;

    /// Each event with the position the tree keeps (scalars and mappings).
    type Seen = Vec<(Event, Option<(usize, usize)>)>;

    fn kept(event: &Event, line: usize, column: usize) -> Option<(usize, usize)> {
        matches!(event, Event::Scalar(..) | Event::MappingStart(..)).then_some((line, column))
    }

    struct Recorder(Seen);

    impl MarkedEventReceiver for Recorder {
        fn on_event(&mut self, event: Event, mark: Marker) {
            let at = kept(&event, mark.line(), mark.col() + 1);
            self.0.push((event, at));
        }
    }

    fn yaml_rust2(text: &str) -> Option<Seen> {
        let mut recorder = Recorder(Vec::new());
        Parser::new_from_str(text)
            .load(&mut recorder, true)
            .ok()
            .map(|()| recorder.0)
    }

    fn fast(text: &str) -> Option<Seen> {
        let mut seen = Vec::new();
        read(text, &mut |event, span| {
            let at = kept(&event, span.line, span.column);
            seen.push((event, at));
        })
        .then_some(seen)
    }

    fn same(text: &str) {
        let fast = fast(text).unwrap_or_else(|| panic!("not read fast: {text:?}"));
        assert_eq!(Some(fast), yaml_rust2(text), "{text:?}");
    }

    #[test]
    fn the_plain_shape_reads_as_yaml_rust2_reads_it() {
        same("a: 1\n");
        same("a: 1");
        same("static_nodes:\n  cn01:\n    platform: ipmi\n    ipmi_host: 10.0.0.1\n");
        same("a:\nb: 2\n");
        same("a:\n");
        same("a:   \n\n  # note\nb:  x y  # why\n  \n");
        same("a:\n  b:\n    c: 1\nd: 2\n");
        same("a:\n  b:\n    c:\n");
        same("cn[001-100],gpu01: x:y/z@w [1] {2} & * ! | > % ` ' \"\n");
        same("a: b#c\n");
        same("a: 'p@ss: #w\"d'\nb: \"x 'y' #z\"  # c\nc: ''\nd: \"\"\n");
        same("a: 1\n\n\n");
        same("x:\n  a:\n  b: 1\n");
        same("x:\n  a:\n# c\n\n  b: 1\n");
        same("x:\n  a:\n    b:\n  c: 1\n");
        same("x:\n  a:\n    b:\ny: 1 #c");
    }

    #[test]
    fn anything_else_is_left_to_yaml_rust2() {
        for text in [
            "",
            "# only a comment\n",
            "  a: 1\n",
            "a: 1\n  b: 2\n",
            "a:",
            "a: 1\n  more\n",
            "a:\n    b: 1\n  c: 2\n",
            "a: [1, 2]\n",
            "a: \"q\\\"r\"\n",
            "a: 'q''r'\n",
            "a: 'q\n  r'\n",
            "a: 'q'r\n",
            "a: 'q'#c\n",
            "a: 'q': b\n",
            "a: &x 1\n",
            "a: *x\n",
            "a: !t 1\n",
            "a: |\n  x\n",
            "a: -1\n",
            "- a\n",
            "a:\n- b\n",
            "a:b\n",
            "a: b:\n",
            "a: b: c\n",
            "a\tb: 1\n",
            "a: 1\r\n",
            "a: é\n",
            "---\na: 1\n",
            "? a\n: 1\n",
            "a b: 1\n",
            "\"a\": 1\n",
        ] {
            assert!(fast(text).is_none(), "read fast: {text:?}");
        }
    }

    /// One line near the edges of the shape, without its indentation:
    /// an entry (with or without a value, a comment, trailing spaces), a
    /// comment or a blank line; and whether a value is on it.
    fn line() -> impl proptest::strategy::Strategy<Value = (String, bool)> {
        use proptest::prelude::*;
        let entry = (
            "[a-z0-9_][a-z0-9_.\\[\\],/-]{0,3}",
            prop_oneof![
                Just(String::new()),
                Just(":".to_string()),
                Just(": #c".to_string()),
                "[ ]{0,2}",
                ":[ ]{1,3}[a-z0-9_./][-a-z0-9 :#_./\\[\\]{},&*!|>%@`'\"?]{0,6}[ ]{0,2}",
                ":[ ]{1,2}[a-z0-9_./][a-z0-9.]{0,3}( #[a-z ]{0,3})?",
                ":[ ]{1,2}['\"][-a-z :#'\"\\\\]{0,4}['\"][ :#a-z'\"]{0,3}",
            ],
        )
            .prop_map(|(key, rest)| {
                let opens = rest.trim_end() == ":" || rest.starts_with(": #");
                (format!("{key}{rest}"), opens)
            });
        prop_oneof![
            8 => entry,
            1 => "[ ]{0,4}(#[a-z :]{0,3})?".prop_map(|l| (l, false)),
        ]
    }

    proptest::proptest! {
        /// Texts of lines near the edges of the shape, most indented as a
        /// mapping allows: whatever is read fast reads exactly as
        /// yaml-rust2 reads it.
        #[test]
        fn whatever_is_read_fast_matches_yaml_rust2(
            lines in proptest::collection::vec((line(), 0usize..4, 0usize..10), 0..12),
            newline_at_end in proptest::bool::ANY,
        ) {
            let mut text = String::new();
            let mut deepest = 0;
            for ((line, opens), depth, wild) in lines {
                // One line in ten keeps any depth; the others stay within
                // what the previous entry allows.
                let depth = if wild == 0 { depth } else { depth.min(deepest) };
                text.push_str(&"  ".repeat(depth));
                text.push_str(&line);
                text.push('\n');
                if !line.trim().is_empty() && !line.trim().starts_with('#') {
                    deepest = depth + usize::from(opens);
                }
            }
            if !newline_at_end {
                text.pop();
            }
            if let Some(fast) = fast(&text) {
                proptest::prop_assert_eq!(Some(fast), yaml_rust2(&text), "{:?}", text);
            }
        }
    }
}
