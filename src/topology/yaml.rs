//! YAML text to a small tree whose every node knows its line and column.
//!
//! Pure. Built straight from YAML events: a scalar is its string and a
//! position, a collection is a `Vec`, so a 100,000-node fragment costs
//! little more than its strings and is dropped whole once the fragment is
//! read. The events are yaml-rust2's, or for the plain shape most files
//! have, the same events from [`super::plain_yaml`], several times faster.
//! Scalars stay strings (`yes` is not a boolean, `010` not a number): the
//! topology decides what a value means.
//!
//! What YAML allows but a topology does not (a key given twice, anchors,
//! tags, a key that is not a plain string, a second document) is reported
//! and the rest of the file is still read, so one load shows every error.
//! Only a syntax error stops the file.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Where a node starts: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl From<Marker> for Span {
    fn from(m: Marker) -> Self {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Span {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

/// A plain or quoted value, always a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar {
    value: String,
    span: Span,
}

impl Scalar {
    /// The value as written (unquoted, escapes resolved).
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// Where it starts.
    pub fn span(&self) -> &Span {
        &self.span
    }
}

/// A mapping's entries in file order, every key a distinct scalar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    entries: Vec<(Scalar, Node)>,
    span: Span,
}

impl Mapping {
    /// Each key and its value, in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&Scalar, &Node)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// Where it starts.
    pub fn span(&self) -> &Span {
        &self.span
    }
}

/// One YAML node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A single value (an empty one for `key:` with nothing after it).
    Scalar(Scalar),
    /// A list, with where it starts.
    Sequence(Vec<Node>, Span),
    /// A mapping.
    Mapping(Mapping),
}

impl Node {
    /// Where it starts.
    pub fn span(&self) -> &Span {
        match self {
            Node::Scalar(s) => s.span(),
            Node::Sequence(_, span) => span,
            Node::Mapping(m) => m.span(),
        }
    }
}

/// Something wrong in the text, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where.
    pub span: Span,
    /// What, for a person.
    pub message: String,
}

/// A file's tree and every problem found in it. The tree is usable even
/// with problems: what was wrong is left out of it.
#[derive(Debug)]
pub struct Parsed {
    /// The first document's top node; an empty mapping for an empty file.
    pub root: Node,
    /// What YAML allows and a topology does not.
    pub problems: Vec<Problem>,
}

#[cfg(test)]
/// Parse `text`. A syntax error is the only `Err`.
pub fn parse(text: &str) -> Result<Parsed, Problem> {
    parse_from(text, 1)
}

/// Parse `text`, a piece of a file starting at its line `first_line`: every
/// position is the file's.
pub fn parse_from(text: &str, first_line: usize) -> Result<Parsed, Problem> {
    let mut builder = Builder {
        lines_before: first_line.saturating_sub(1),
        ..Builder::default()
    };
    let lines_before = builder.lines_before;
    let fast = super::plain_yaml::read(text, &mut |event, span| {
        let span = Span {
            line: span.line + lines_before,
            ..span
        };
        builder.on(event, span);
    });
    if !fast {
        builder = Builder {
            lines_before,
            ..Builder::default()
        };
        Parser::new_from_str(text)
            .load(&mut builder, true)
            .map_err(|e| Problem {
                span: builder.span(*e.marker()),
                message: format!("invalid YAML: {}", e.info()),
            })?;
    }
    let root = builder.root.unwrap_or_else(|| {
        Node::Mapping(Mapping {
            entries: Vec::new(),
            span: Span { line: 1, column: 1 },
        })
    });
    Ok(Parsed {
        root,
        problems: builder.problems,
    })
}

/// A collection being read.
enum Open {
    Sequence(Vec<Node>, Span),
    /// Entries so far, and the key waiting for its value (`None` inside
    /// when the key was refused and its value is to be dropped).
    // Three states, each named above: an enum of its own would only rename them.
    #[allow(clippy::option_option)]
    Mapping(Mapping, Option<Option<Scalar>>),
}

#[derive(Default)]
struct Builder {
    open: Vec<Open>,
    root: Option<Node>,
    documents: usize,
    problems: Vec<Problem>,
    /// Lines of the file before the text parsed.
    lines_before: usize,
}

impl Builder {
    /// Where `mark` stands in the file.
    fn span(&self, mark: Marker) -> Span {
        let span = Span::from(mark);
        Span {
            line: span.line + self.lines_before,
            ..span
        }
    }

    fn problem(&mut self, span: Span, message: impl Into<String>) {
        self.problems.push(Problem {
            span,
            message: message.into(),
        });
    }

    /// Anchors and tags have no meaning in a topology: say so, and read
    /// the node as if they were not there.
    fn plain(&mut self, span: Span, anchor: usize, tagged: bool) {
        if anchor != 0 {
            self.problem(span, "YAML anchors and aliases are not supported");
        }
        if tagged {
            self.problem(span, "YAML tags are not supported");
        }
    }

    /// A finished node goes into the collection it belongs to.
    fn finished(&mut self, node: Node) {
        match self.open.last_mut() {
            None if self.root.is_none() => self.root = Some(node),
            None => {}
            Some(Open::Sequence(items, _)) => items.push(node),
            Some(Open::Mapping(mapping, key)) => match key.take() {
                Some(Some(k)) => mapping.entries.push((k, node)),
                Some(None) => {}
                None => match node {
                    Node::Scalar(k) => *key = Some(Some(k)),
                    other => {
                        *key = Some(None);
                        let span = *other.span();
                        self.problem(span, "a mapping key must be a plain string");
                    }
                },
            },
        }
    }

    /// `mapping` with each key's later repeats reported and dropped: the
    /// first value stands.
    fn without_repeats(&mut self, mut mapping: Mapping) -> Mapping {
        let entries = &mapping.entries;
        let mut repeats = Vec::new();
        // Most mappings are a node's few settings: a scan beats hashing.
        if entries.len() <= 16 {
            for (i, (key, _)) in entries.iter().enumerate() {
                if let Some(at) = entries[..i].iter().position(|(k, _)| k.value == key.value) {
                    repeats.push((i, at));
                }
            }
        } else {
            let mut first: HashMap<&str, usize, foldhash::fast::RandomState> =
                HashMap::with_capacity_and_hasher(
                    entries.len(),
                    foldhash::fast::RandomState::default(),
                );
            for (i, (key, _)) in entries.iter().enumerate() {
                if let Some(&at) = first.get(key.as_str()) {
                    repeats.push((i, at));
                } else {
                    first.insert(key.as_str(), i);
                }
            }
        }
        for &(i, at) in &repeats {
            let (key, first) = (&mapping.entries[i].0, &mapping.entries[at].0);
            let message = format!(
                "key {:?} given twice in one mapping (first at line {})",
                key.as_str(),
                first.span.line
            );
            self.problem(key.span, message);
        }
        // Backwards, so each index still points at its entry.
        for &(i, _) in repeats.iter().rev() {
            mapping.entries.remove(i);
        }
        mapping
    }
}

impl Builder {
    /// `event`, found at `span` in the file.
    fn on(&mut self, event: Event, span: Span) {
        match event {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents == 2 {
                    self.problem(
                        span,
                        "only one YAML document per file (found a second \"---\")",
                    );
                }
            }
            // Everything of a second document is ignored.
            _ if self.documents > 1 => {}
            Event::Scalar(value, _style, anchor, tag) => {
                self.plain(span, anchor, tag.is_some());
                self.finished(Node::Scalar(Scalar { value, span }));
            }
            Event::Alias(_) => {
                self.problem(span, "YAML anchors and aliases are not supported");
                self.finished(Node::Scalar(Scalar {
                    value: String::new(),
                    span,
                }));
            }
            Event::SequenceStart(anchor, tag) => {
                self.plain(span, anchor, tag.is_some());
                self.open.push(Open::Sequence(Vec::new(), span));
            }
            Event::MappingStart(anchor, tag) => {
                self.plain(span, anchor, tag.is_some());
                let mapping = Mapping {
                    entries: Vec::new(),
                    span,
                };
                self.open.push(Open::Mapping(mapping, None));
            }
            Event::SequenceEnd | Event::MappingEnd => match self.open.pop() {
                Some(Open::Sequence(items, span)) => self.finished(Node::Sequence(items, span)),
                Some(Open::Mapping(mapping, _)) => {
                    let mapping = self.without_repeats(mapping);
                    self.finished(Node::Mapping(mapping));
                }
                None => {}
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let span = self.span(mark);
        self.on(event, span);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(text: &str) -> Vec<String> {
        parse(text)
            .unwrap()
            .problems
            .iter()
            .map(|p| format!("{}:{}: {}", p.span.line, p.span.column, p.message))
            .collect()
    }

    fn root(text: &str) -> Node {
        let parsed = parse(text).unwrap();
        assert_eq!(parsed.problems, []);
        parsed.root
    }

    #[test]
    fn scalars_stay_strings_with_their_positions() {
        let Node::Mapping(m) = root("a: yes\nb:\n  - 010\n  - \"x y\"\nc:\n") else {
            panic!("not a mapping")
        };
        let entries: Vec<(&str, &Node)> = m.iter().map(|(k, v)| (k.as_str(), v)).collect();
        assert_eq!(entries[0].0, "a");
        let Node::Scalar(yes) = entries[0].1 else {
            panic!()
        };
        assert_eq!(
            (yes.as_str(), yes.span().line, yes.span().column),
            ("yes", 1, 4)
        );
        let Node::Sequence(items, _) = entries[1].1 else {
            panic!()
        };
        let values: Vec<&str> = items
            .iter()
            .map(|n| match n {
                Node::Scalar(s) => s.as_str(),
                _ => panic!(),
            })
            .collect();
        assert_eq!(values, ["010", "x y"]);
        let Node::Scalar(empty) = entries[2].1 else {
            panic!()
        };
        assert_eq!(empty.as_str(), "");
    }

    #[test]
    fn an_empty_file_is_an_empty_mapping() {
        let Node::Mapping(m) = root("") else { panic!() };
        assert_eq!(m.iter().count(), 0);
    }

    #[test]
    fn every_repeated_key_is_reported_and_the_first_value_stands() {
        let text = "a: 1\nb:\n  x: 1\n  x: 2\na: 3\nc: 4\nc: 5\n";
        assert_eq!(
            messages(text),
            [
                "4:3: key \"x\" given twice in one mapping (first at line 3)",
                "5:1: key \"a\" given twice in one mapping (first at line 1)",
                "7:1: key \"c\" given twice in one mapping (first at line 6)",
            ]
        );
        let Node::Mapping(m) = parse(text).unwrap().root else {
            panic!()
        };
        let Some((_, Node::Scalar(a))) = m.iter().next() else {
            panic!()
        };
        assert_eq!(a.as_str(), "1");
        assert_eq!(m.iter().count(), 3);
    }

    #[test]
    fn anchors_tags_complex_keys_and_second_documents_are_reported() {
        assert_eq!(
            messages("a: &x 1\nb: *x\nc: !!str 2\n? [k]\n: v\nd: 5\n---\ne: 6\n"),
            [
                "1:7: YAML anchors and aliases are not supported",
                "2:4: YAML anchors and aliases are not supported",
                "3:10: YAML tags are not supported",
                "4:3: a mapping key must be a plain string",
                "7:1: only one YAML document per file (found a second \"---\")",
            ]
        );
    }

    #[test]
    fn a_syntax_error_stops_the_file_with_its_position() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.message.starts_with("invalid YAML: "), "{e:?}");
        assert_eq!(e.span.line, 2);
    }
}
