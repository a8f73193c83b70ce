//! One NDJSON result line (a `commands` resource), written and read
//! without serde's generic machinery.
//!
//! A 1,008-node request is 1,008 of these lines on each side, and serde
//! spent several thousand instructions on each: field names matched one
//! by one, every string checked and copied through a visitor. These are
//! the fast paths for the one shape the server writes:
//!
//! - [`write()`] writes exactly the bytes `serde_json` writes for
//!   [`Resource::command`](crate::wire::Resource::command) (tests compare them), so nothing on the wire
//!   changes;
//! - [`read`] reads such a line, or gives up (`None`) on anything else:
//!   a string with an escape, an unknown or repeated key, another order
//!   of nesting. The caller then reads the line with serde, so a line it
//!   reads always means what serde would read, and any line serde reads
//!   is still read.

use crate::wire::{CommandAttributes, ErrorClass, PowerState};

/// Appends `result` as a `commands` resource, as
/// `serde_json::to_writer(out, &Resource::command(result))` would, with
/// no newline.
pub fn write(out: &mut Vec<u8>, result: &CommandAttributes) {
    out.extend_from_slice(br#"{"type":"commands","id":"#);
    string(out, &result.node_name);
    out.extend_from_slice(br#","attributes":{"action":""#);
    out.extend_from_slice(result.action.as_str().as_bytes());
    out.extend_from_slice(br#"","node-name":"#);
    string(out, &result.node_name);
    out.extend_from_slice(br#","platform":"#);
    match &result.platform {
        Some(platform) => string(out, platform),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(br#","missing":"#);
    boolean(out, result.missing);
    out.extend_from_slice(br#","success":"#);
    boolean(out, result.success);
    if let Some(running) = result.running {
        out.extend_from_slice(br#","running":"#);
        boolean(out, running);
    }
    if let Some(state) = result.state {
        out.extend_from_slice(br#","state":""#);
        out.extend_from_slice(state_word(state).as_bytes());
        out.push(b'"');
    }
    if let Some(error) = &result.error {
        out.extend_from_slice(br#","error":"#);
        string(out, error);
    }
    if let Some(class) = result.error_class {
        out.extend_from_slice(br#","error-class":""#);
        out.extend_from_slice(class.as_str().as_bytes());
        out.push(b'"');
    }
    if let Some(confirmed) = result.confirmed {
        out.extend_from_slice(br#","confirmed":"#);
        boolean(out, confirmed);
    }
    if let Some(fallback) = result.fallback {
        out.extend_from_slice(br#","fallback":"#);
        boolean(out, fallback);
    }
    if let Some(code) = result.exit_code {
        out.extend_from_slice(br#","exit-code":"#);
        out.extend_from_slice(itoa::Buffer::new().format(code).as_bytes());
    }
    out.extend_from_slice(br#","duration-ms":"#);
    out.extend_from_slice(itoa::Buffer::new().format(result.duration_ms).as_bytes());
    out.extend_from_slice(b"}}");
}

/// A JSON string: as it is when nothing in it needs an escape (node names,
/// platforms, most errors), else through serde_json, whose escapes these
/// must be.
fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        serde_json::to_writer(out, s).expect("a string serialises");
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

fn boolean(out: &mut Vec<u8>, value: bool) {
    out.extend_from_slice(if value { b"true" } else { b"false" });
}

fn state_word(state: PowerState) -> &'static str {
    match state {
        PowerState::On => "on",
        PowerState::Off => "off",
        PowerState::Unknown => "unknown",
    }
}

/// Reads a line as [`write()`] writes it (keys in its order, no white space
/// inside, any after), or `None`: then read it with serde, which reads
/// any valid line (keys in another order, escapes, spacing) and says what
/// is wrong with the rest. The line is matched against the writer's form
/// piece by piece, so whatever it reads, serde reads the same way.
pub fn read(line: &[u8]) -> Option<CommandAttributes> {
    // Checked once, as a whole: each string is then a slice of it.
    let text = std::str::from_utf8(line).ok()?;
    let mut r = Reader {
        text,
        s: line,
        at: 0,
    };
    r.expect(br#"{"type":"commands","id":"#)?;
    r.string()?;
    r.expect(br#","attributes":{"action":"#)?;
    let action = r.string()?.parse().ok()?;
    r.expect(br#","node-name":"#)?;
    let node_name = r.string()?.to_string();
    r.expect(br#","platform":"#)?;
    let platform = if r.next(b"null") {
        None
    } else {
        Some(r.string()?.to_string())
    };
    r.expect(br#","missing":"#)?;
    let missing = r.boolean()?;
    r.expect(br#","success":"#)?;
    let success = r.boolean()?;
    let running = r.optional(br#","running":"#, Reader::boolean)?;
    let state = r.optional(br#","state":"#, |r| match r.string()? {
        "on" => Some(PowerState::On),
        "off" => Some(PowerState::Off),
        "unknown" => Some(PowerState::Unknown),
        _ => None,
    })?;
    let error = r.optional(br#","error":"#, |r| r.string().map(str::to_string))?;
    let error_class = r.optional(br#","error-class":"#, |r| r.string().map(error_class_of))?;
    let confirmed = r.optional(br#","confirmed":"#, Reader::boolean)?;
    let fallback = r.optional(br#","fallback":"#, Reader::boolean)?;
    let exit_code = r.optional(br#","exit-code":"#, |r| {
        i32::try_from(r.integer(true)?).ok()
    })?;
    r.expect(br#","duration-ms":"#)?;
    let duration_ms = u64::try_from(r.integer(false)?).ok()?;
    r.expect(b"}}")?;
    // Only white space after (the newline, a CR).
    if !line[r.at..]
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return None;
    }
    Some(CommandAttributes {
        action,
        node_name,
        platform,
        missing,
        success,
        running,
        state,
        error,
        error_class,
        confirmed,
        fallback,
        exit_code,
        duration_ms,
    })
}

/// A cursor over one line.
struct Reader<'a> {
    /// The line.
    text: &'a str,
    /// Its bytes.
    s: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// Takes `bytes` if they come next.
    fn next(&mut self, bytes: &[u8]) -> bool {
        let found = self.s[self.at..].starts_with(bytes);
        if found {
            self.at += bytes.len();
        }
        found
    }

    /// Takes `bytes`, which must come next.
    fn expect(&mut self, bytes: &[u8]) -> Option<()> {
        self.next(bytes).then_some(())
    }

    /// After `key` (which is left out when the value is), a value read by
    /// `value`: `Some(None)` without the key, `None` for a bad value.
    #[allow(clippy::option_option)] // the three cases are those
    fn optional<T>(
        &mut self,
        key: &[u8],
        value: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<Option<T>> {
        if self.next(key) {
            value(self).map(Some)
        } else {
            Some(None)
        }
    }

    /// A string without escapes (with one, `None`: serde decodes those).
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b"\"")?;
        let start = self.at;
        let end = start + special(&self.s[start..])?;
        // The first byte to look at is the end, or one serde must decode.
        if self.s[end] != b'"' {
            return None;
        }
        self.at = end + 1;
        // Quotes are ASCII, so both ends are on character boundaries.
        self.text.get(start..end)
    }

    fn boolean(&mut self) -> Option<bool> {
        if self.next(b"true") {
            Some(true)
        } else if self.next(b"false") {
            Some(false)
        } else {
            None
        }
    }

    /// An integer in plain digits, `-` first when `signed`; no fraction,
    /// no exponent (serde refuses those for integers too).
    fn integer(&mut self, signed: bool) -> Option<i128> {
        let negative = signed && self.next(b"-");
        let start = self.at;
        let digits = self.s[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        // A leading zero only alone, as JSON has it; 20 digits fit i128.
        if digits == 0 || digits > 20 || (digits > 1 && self.s[start] == b'0') {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = self.s.get(start + digits) {
            return None;
        }
        self.at = start + digits;
        let value: i128 = self.text[start..self.at].parse().ok()?;
        Some(if negative { -value } else { value })
    }
}

/// Where the first `"`, `\` or control byte of `s` is, eight bytes at a
/// time (as serde_json looks for the end of a string): a byte at a time,
/// the scan was most of a line's cost.
fn special(s: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    let zero_in = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let mut chunks = s.chunks_exact(8);
    let mut at = 0;
    for chunk in chunks.by_ref() {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        // A borrow only ever marks bytes above a true match, so the
        // lowest mark is the first match.
        let marks = zero_in(word ^ (ONES * u64::from(b'"')))
            | zero_in(word ^ (ONES * u64::from(b'\\')))
            | (word.wrapping_sub(ONES * 0x20) & !word & HIGH);
        if marks != 0 {
            return Some(at + marks.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let rest = chunks.remainder();
    let found = rest
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    Some(at + found)
}

/// The class a word names; an unknown one is `failed`, as serde reads it.
fn error_class_of(word: &str) -> ErrorClass {
    ErrorClass::ALL
        .into_iter()
        .find(|c| c.as_str() == word)
        .unwrap_or(ErrorClass::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Action, Resource};

    fn full() -> CommandAttributes {
        CommandAttributes {
            action: Action::PowerOff,
            node_name: "n01".into(),
            platform: Some("ipmi".into()),
            missing: false,
            success: false,
            running: Some(false),
            state: Some(PowerState::Unknown),
            error: Some("ipmitool: RAKP 2 HMAC is invalid".into()),
            error_class: Some(ErrorClass::Auth),
            confirmed: Some(false),
            fallback: Some(true),
            exit_code: Some(-77),
            duration_ms: 1234,
        }
    }

    fn serde_line(result: &CommandAttributes) -> Vec<u8> {
        serde_json::to_vec(&Resource::command(result.clone())).unwrap()
    }

    #[test]
    fn finds_the_first_special_byte_as_a_plain_scan_does() {
        let naive = |s: &[u8]| s.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
        let bytes = [
            0, 0x1f, 0x20, 0x21, b'"', b'#', b'[', b'\\', b']', 0x7f, 0x80, 0xa0, 0xff,
        ];
        for len in 0..20 {
            for filler in bytes {
                for at in 0..len {
                    for byte in bytes {
                        let mut s = vec![filler; len];
                        s[at] = byte;
                        assert_eq!(special(&s), naive(&s), "{s:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn writes_what_serde_writes() {
        let mut sparse = CommandAttributes::missing(Action::Status, "x");
        sparse.running = None;
        sparse.error = Some("a \"quoted\" \\ tab\t and \u{1} bell".into());
        for result in [full(), sparse] {
            let mut out = Vec::new();
            write(&mut out, &result);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(serde_line(&result)).unwrap()
            );
        }
    }

    #[test]
    fn reads_what_it_writes() {
        let mut out = Vec::new();
        write(&mut out, &full());
        assert_eq!(read(&out), Some(full()));
        out.extend_from_slice(b"\r\n");
        assert_eq!(read(&out), Some(full()));
        let least = CommandAttributes::missing(Action::Restart, "gone");
        out.clear();
        write(&mut out, &least);
        assert_eq!(read(&out), Some(least));
    }

    #[test]
    fn leaves_anything_else_to_serde() {
        let line = String::from_utf8(serde_line(&full())).unwrap();
        for other in [
            // An escape, a repeated key, an unknown key, a turn, a float,
            // a leading zero, a bare result, trailing bytes, an unknown
            // state, keys in another order, spacing.
            line.replace("RAKP", "\\u0052AKP"),
            line.replace("\"missing\":false", "\"missing\":false,\"missing\":true"),
            line.replace("\"missing\"", "\"later\":1,\"missing\""),
            line.replace("commands", "turns"),
            line.replace("1234", "12.5"),
            line.replace("\"duration-ms\":1234", "\"duration-ms\":01234"),
            line[line.find("\"attributes\":").unwrap() + 13..line.len() - 1].to_string(),
            format!("{line} x"),
            line.replace("\"unknown\"", "\"sideways\""),
            line.replace(
                "\"missing\":false,\"success\":false",
                "\"success\":false,\"missing\":false",
            ),
            line.replace(",\"", ", \""),
        ] {
            assert_eq!(read(other.as_bytes()), None, "{other}");
        }
        // A class this side does not know is `failed`, as serde reads it.
        let newer = line.replace("\"auth\"", "\"quota\"");
        assert_eq!(
            read(newer.as_bytes()).unwrap().error_class,
            Some(ErrorClass::Failed)
        );
    }
}
