//! Rendering for people and scripts: the borderless table, the per-outcome
//! summary, colour, and writing to stdout.
//!
//! Rendering is pure (text in, text out); only [`write_stdout`] and
//! [`colour_enabled`] look at the world. A closed stdout (`power status all |
//! head -1`) is not an error.

use crate::exit::Failure;
use std::borrow::Cow;
use std::io::{IsTerminal, Write};

/// The output format chosen by `--json` / `--summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One row per node: name and the reference client's word.
    Table,
    /// One JSON document.
    Json,
    /// One line per outcome with a compressed hostlist.
    Summary,
}

/// How a word is coloured on a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Did what was asked (green).
    Good,
    /// Neither good nor bad: a node that is off (no colour).
    Plain,
    /// Succeeded, but not all the way (yellow): did not reach the state.
    Warn,
    /// Failed, unknown or missing (red).
    Bad,
}

/// One table row, borrowing what it shows where it can: a table has a
/// row per node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row<'a> {
    /// First column: the node or group name.
    pub name: Cow<'a, str>,
    /// Second column: the word (`On`, `Failed to start`, ...).
    pub word: Cow<'a, str>,
    /// Its colour.
    pub tone: Tone,
    /// Optional third column: why it failed.
    pub note: Option<Cow<'a, str>>,
}

/// True when stdout is a terminal and `NO_COLOR` is unset or empty.
pub fn colour_enabled() -> bool {
    let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_colour && std::io::stdout().is_terminal()
}

/// Wraps `text` in the tone's ANSI colour when `colour` is on.
pub fn paint(text: &str, tone: Tone, colour: bool) -> String {
    let mut out = String::new();
    paint_into(&mut out, text, tone, colour);
    out
}

/// Appends `text` to `out`, in the tone's ANSI colour when `colour` is on.
fn paint_into(out: &mut String, text: &str, tone: Tone, colour: bool) {
    let code = match tone {
        Tone::Good => "32",
        Tone::Warn => "33",
        Tone::Bad => "31",
        Tone::Plain => "",
    };
    if colour && !code.is_empty() {
        out.push_str("\x1b[");
        out.push_str(code);
        out.push('m');
        out.push_str(text);
        out.push_str("\x1b[0m");
    } else {
        out.push_str(text);
    }
}

/// Renders rows as a borderless table: columns two spaces apart, padded by
/// their plain width (so colour does not skew them), no trailing spaces.
pub fn table(rows: &[Row], colour: bool) -> String {
    let name_width = rows.iter().map(|r| r.name.chars().count()).max();
    let name_width = name_width.unwrap_or(0);
    let word_width = rows.iter().map(|r| r.word.chars().count()).max();
    let word_width = word_width.unwrap_or(0);
    let width = name_width + word_width + 4;
    let mut out = String::with_capacity(rows.len() * (width + 1));
    let pad = |out: &mut String, text: &str, width: usize| {
        out.extend(std::iter::repeat_n(' ', width - text.chars().count()));
    };
    for row in rows {
        out.push_str(&row.name);
        pad(&mut out, &row.name, name_width);
        out.push_str("  ");
        paint_into(&mut out, &row.word, row.tone, colour);
        if let Some(note) = &row.note {
            pad(&mut out, &row.word, word_width);
            out.push_str("  ");
            out.push_str(note);
        }
        out.push('\n');
    }
    out
}

/// Renders `key: hostlist` lines, one per outcome, in the order given.
pub fn summary(lines: &[(String, Tone, Vec<String>)], colour: bool) -> String {
    let mut out = String::new();
    for (key, tone, names) in lines {
        let key = paint(&format!("{key}:"), *tone, colour);
        let names = power_proto::hostlist::compress(names);
        out.push_str(&format!("{key} {names}\n"));
    }
    out
}

/// Serialises a document as pretty JSON with a final newline.
pub fn json<T: serde::Serialize>(document: &T) -> String {
    let mut text = serde_json::to_string_pretty(document).expect("plain data serialises");
    text.push('\n');
    text
}

/// Writes `text` to stdout. A closed pipe is not an error: the reader has
/// what it wanted.
pub fn write_stdout(text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::Output(crate::describe_io(&e)))
        }
        _ => Ok(()),
    }
}

/// Writes `power: MESSAGE` on stderr. A closed stderr is ignored: there is
/// nowhere left to say anything.
pub fn warn(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "power: {message}");
}

/// Sorts names as people count: `n2` before `n10`.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut rest = s;
        while let Some(first) = rest.chars().next() {
            let digit = first.is_ascii_digit();
            let end = rest
                .find(|c: char| c.is_ascii_digit() != digit)
                .unwrap_or(rest.len());
            out.push((digit, &rest[..end]));
            rest = &rest[end..];
        }
        out
    }
    let key = |s| {
        chunks(s)
            .into_iter()
            .map(|(digit, text)| {
                if digit {
                    let trimmed = text.trim_start_matches('0');
                    (String::new(), trimmed.len(), trimmed.to_string())
                } else {
                    (text.to_string(), 0, String::new())
                }
            })
            .collect::<Vec<_>>()
    };
    key(a).cmp(&key(b)).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(name: &'a str, word: &'a str, tone: Tone, note: Option<&'a str>) -> Row<'a> {
        Row {
            name: name.into(),
            word: word.into(),
            tone,
            note: note.map(Into::into),
        }
    }

    #[test]
    fn tables_align_without_trailing_spaces() {
        let rows = [
            row("node01", "Starting", Tone::Good, None),
            row("n2", "Failed to start", Tone::Bad, Some("sim: boom")),
        ];
        assert_eq!(
            table(&rows, false),
            "node01  Starting\nn2      Failed to start  sim: boom\n"
        );
        let coloured = table(&rows, true);
        assert!(coloured.starts_with("node01  \x1b[32mStarting\x1b[0m\n"));
        assert!(coloured.contains("n2      \x1b[31mFailed to start\x1b[0m  sim: boom"));
        assert_eq!(table(&[], false), "");
    }

    #[test]
    fn summaries_compress() {
        let names = ["node01", "node02", "node03", "node04", "node05", "node07"];
        let lines = [
            (
                "on".to_string(),
                Tone::Good,
                names.map(String::from).to_vec(),
            ),
            ("unknown".to_string(), Tone::Bad, vec!["login1".to_string()]),
        ];
        assert_eq!(
            summary(&lines, false),
            "on: node[01-05,07]\nunknown: login1\n"
        );
        assert!(summary(&lines, true).starts_with("\x1b[32mon:\x1b[0m node"));
    }

    #[test]
    fn natural_order() {
        let mut names = vec!["n10", "n2", "m1", "n02x", "n1", "n01"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names, ["m1", "n01", "n1", "n2", "n02x", "n10"]);
    }
}
