//! Hostlist expressions: `node[01-10],login1` and friends.
//!
//! The grammar follows powerman/pdsh/Slurm. An expression is comma-separated
//! terms (commas inside brackets belong to the bracket). A term is a name of
//! ASCII alphanumerics, `-`, `_` and `.` with any number of bracket groups,
//! each holding comma-separated numbers (`7`) and ranges (`01-10`). A range
//! keeps the width of its lower bound as written, and several groups expand
//! as a cartesian product, leftmost varying slowest.
//!
//! Pure: no I/O.

use std::collections::HashSet;
use std::fmt;

/// The usual cap on how many names one expression may expand to.
pub const DEFAULT_LIMIT: usize = 100_000;

/// Why an expression was refused. Every message quotes the offending term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostlistError {
    /// A `[` without its `]`, a `]` without its `[`, or nested brackets.
    Unbalanced {
        /// The term, as written.
        term: String,
    },
    /// A bracket with nothing in it: `node[]`.
    EmptyBracket {
        /// The term, as written.
        term: String,
    },
    /// A bracket item that is neither a number nor a range: `node[a-c]`.
    NotANumber {
        /// The term, as written.
        term: String,
        /// The bracket item.
        item: String,
    },
    /// A range whose lower bound comes second: `node[10-1]`.
    ReversedRange {
        /// The term, as written.
        term: String,
        /// The range.
        range: String,
    },
    /// A character that cannot appear in a host name.
    InvalidChar {
        /// The term, as written.
        term: String,
        /// The character.
        ch: char,
    },
    /// A bracket number that does not fit in a `u64`.
    NumberTooLarge {
        /// The term, as written.
        term: String,
        /// The number, as written.
        number: String,
    },
    /// The expression would expand to more than `limit` names.
    TooMany {
        /// The most names allowed.
        limit: usize,
        /// How many it would expand to (before duplicates are dropped).
        count: u128,
    },
}

impl fmt::Display for HostlistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unbalanced { term } => write!(
                f,
                "unbalanced brackets in `{term}`: expected each `[` closed by `]`, unnested"
            ),
            Self::EmptyBracket { term } => write!(
                f,
                "empty brackets in `{term}`: expected numbers or ranges, e.g. `[1-4,7]`"
            ),
            Self::NotANumber { term, item } => write!(
                f,
                "`{item}` in `{term}` is not a number or range: expected e.g. `7` or `01-10`"
            ),
            Self::ReversedRange { term, range } => write!(
                f,
                "range `{range}` in `{term}` is reversed: the lower bound must come first"
            ),
            Self::InvalidChar { term, ch } => write!(
                f,
                "character {ch:?} is not allowed in host name `{term}`: \
                 expected ASCII letters, digits, `-`, `_` or `.`"
            ),
            Self::NumberTooLarge { term, number } => write!(
                f,
                "number `{number}` in `{term}` is too large: expected at most {}",
                u64::MAX
            ),
            Self::TooMany { limit, count } => write!(
                f,
                "hostlist expands to {count} names, more than the limit of {limit}"
            ),
        }
    }
}

impl std::error::Error for HostlistError {}

/// An inclusive run of numbers, written zero-padded to `width` digits.
#[derive(Debug)]
struct Range {
    lo: u64,
    hi: u64,
    width: usize,
}

#[derive(Debug)]
enum Piece<'a> {
    Literal(&'a str),
    Group(Vec<Range>),
}

/// A parsed term: literal text and bracket groups, in order.
type Term<'a> = Vec<Piece<'a>>;

/// Expands `expr` into host names, in order, without duplicates.
///
/// An empty (or all-whitespace) expression gives an empty list. Fails with
/// [`HostlistError::TooMany`] before allocating anything if the expansion,
/// counted *before* duplicates are dropped, would exceed `limit` names.
pub fn expand(expr: &str, limit: usize) -> Result<Vec<String>, HostlistError> {
    let terms = parse(expr)?;
    let count = total_count(&terms);
    if count > limit as u128 {
        return Err(HostlistError::TooMany { limit, count });
    }
    let names: Vec<String> = terms.iter().flat_map(|t| expand_term(t)).collect();
    if !may_repeat(&terms) {
        return Ok(names);
    }
    let mut seen = HashSet::with_capacity(names.len());
    let first: Vec<bool> = names.iter().map(|n| seen.insert(n.as_str())).collect();
    drop(seen);
    Ok(names
        .into_iter()
        .zip(first)
        .filter_map(|(name, first)| first.then_some(name))
        .collect())
}

/// Whether `terms` may name a host twice. Not when they are one term with
/// at most one bracket group of one range (`node[0001-1008]`, the usual
/// request), which need no deduplication. Two groups may: `n[1-12][1-12]`
/// gives `n111` twice.
fn may_repeat(terms: &[Term]) -> bool {
    let [term] = terms else {
        return terms.len() > 1;
    };
    let mut groups = term.iter().filter_map(|piece| match piece {
        Piece::Group(ranges) => Some(ranges.len()),
        Piece::Literal(_) => None,
    });
    !matches!((groups.next(), groups.next()), (None, _) | (Some(1), None))
}

/// How many names `expr` expands to, counting duplicates, without expanding
/// it. Saturates at `u128::MAX`.
pub fn count(expr: &str) -> Result<u128, HostlistError> {
    Ok(total_count(&parse(expr)?))
}

/// Writes `names` back as a compact expression, for display: `node[01-05,07]`.
///
/// Names are grouped by what surrounds their last run of digits; within a
/// group, consecutive numbers merge into ranges only where the range's width
/// reproduces each name exactly, so `expand(&compress(x), ..)` gives back the
/// set of `x` for any valid host names. Output is sorted by prefix, then
/// numerically; names without digits are kept whole; empty names are skipped.
pub fn compress<I, S>(names: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let names: Vec<S> = names.into_iter().collect();
    // (prefix, Some(suffix), value, written width), or (name, None, ..) for
    // a plain name, which sorts it before any group of that prefix. Sorted
    // rather than kept in a map: no copy of any name.
    let mut split: Vec<(&str, Option<&str>, u64, usize)> = names
        .iter()
        .map(AsRef::as_ref)
        .filter(|name| !name.is_empty())
        .map(|name| match split_last_number(name) {
            Some((prefix, value, width, suffix)) => (prefix, Some(suffix), value, width),
            None => (name, None, 0, 0),
        })
        .collect();
    // Names from an expanded hostlist come sorted: a pass to see it is
    // cheaper than the sort.
    if !split.is_sorted() {
        split.sort_unstable();
    }
    split.dedup();
    let mut parts: Vec<String> = Vec::new();
    for group in split.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        let (prefix, suffix) = (group[0].0, group[0].1);
        parts.push(match suffix {
            None => prefix.to_owned(),
            Some(suffix) => {
                match ranges(&group.iter().map(|e| (e.2, e.3)).collect::<Vec<_>>()).as_slice() {
                    [single] if !single.contains('-') => format!("{prefix}{single}{suffix}"),
                    items => format!("{prefix}[{}]{suffix}", items.join(",")),
                }
            }
        });
    }
    parts.join(",")
}

/// Splits at top-level commas and parses each non-empty term.
fn parse(expr: &str) -> Result<Vec<Term<'_>>, HostlistError> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in expr.char_indices() {
        match c {
            '[' => depth += 1,
            // Saturating: a stray `]` is reported by parse_term.
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&expr[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&expr[start..]);
    terms
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(parse_term)
        .collect()
}

fn parse_term(term: &str) -> Result<Term<'_>, HostlistError> {
    let unbalanced = || HostlistError::Unbalanced {
        term: term.to_owned(),
    };
    let mut pieces = Vec::new();
    let mut rest = term;
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix('[') {
            let close = inner.find(']').ok_or_else(unbalanced)?;
            let body = &inner[..close];
            if body.contains('[') {
                return Err(unbalanced());
            }
            pieces.push(Piece::Group(parse_group(term, body)?));
            rest = &inner[close + 1..];
        } else {
            let end = rest.find('[').unwrap_or(rest.len());
            let literal = &rest[..end];
            if let Some(ch) = literal.chars().find(|&c| !is_name_char(c)) {
                return Err(if ch == ']' {
                    unbalanced()
                } else {
                    HostlistError::InvalidChar {
                        term: term.to_owned(),
                        ch,
                    }
                });
            }
            pieces.push(Piece::Literal(literal));
            rest = &rest[end..];
        }
    }
    Ok(pieces)
}

fn parse_group(term: &str, body: &str) -> Result<Vec<Range>, HostlistError> {
    if body.is_empty() {
        return Err(HostlistError::EmptyBracket {
            term: term.to_owned(),
        });
    }
    body.split(',')
        .map(|item| {
            let (lo, hi) = item.split_once('-').unwrap_or((item, item));
            let is_number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            if !is_number(lo) || !is_number(hi) {
                return Err(HostlistError::NotANumber {
                    term: term.to_owned(),
                    item: item.to_owned(),
                });
            }
            // All digits, so parsing can only fail by overflow.
            let parse = |s: &str| {
                s.parse::<u64>().map_err(|_| HostlistError::NumberTooLarge {
                    term: term.to_owned(),
                    number: s.to_owned(),
                })
            };
            let range = Range {
                lo: parse(lo)?,
                hi: parse(hi)?,
                width: lo.len(),
            };
            if range.lo > range.hi {
                return Err(HostlistError::ReversedRange {
                    term: term.to_owned(),
                    range: item.to_owned(),
                });
            }
            Ok(range)
        })
        .collect()
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Sum over terms of the product of their group sizes, saturating so absurd
/// expressions are counted (and refused) rather than overflowing.
fn total_count(terms: &[Term]) -> u128 {
    let group_size = |ranges: &[Range]| {
        let sizes = ranges.iter().map(|r| u128::from(r.hi - r.lo) + 1);
        sizes.fold(0, u128::saturating_add)
    };
    let term_count = |term: &Term| {
        let sizes = term.iter().map(|piece| match piece {
            Piece::Literal(_) => 1,
            Piece::Group(ranges) => group_size(ranges),
        });
        sizes.fold(1, u128::saturating_mul)
    };
    terms.iter().map(term_count).fold(0, u128::saturating_add)
}

fn expand_term(pieces: &[Piece]) -> Vec<String> {
    // Each name allocated once, at its full length: the literals' length
    // plus the widest number.
    let longest = pieces
        .iter()
        .map(|piece| match piece {
            Piece::Literal(text) => text.len(),
            Piece::Group(ranges) => ranges
                .iter()
                .map(|r| r.width.max(digits(r.hi)))
                .max()
                .unwrap_or(0),
        })
        .sum::<usize>();
    let mut names = vec![String::with_capacity(longest)];
    for piece in pieces {
        match piece {
            Piece::Literal(text) => names.iter_mut().for_each(|n| n.push_str(text)),
            // Existing names outermost, so the leftmost group varies slowest.
            Piece::Group(ranges) => {
                let mut next = Vec::with_capacity(names.len().saturating_mul(group_size(ranges)));
                // itoa and the zeros by hand (`push_number`): `format!`'s
                // padding was most of a name's cost.
                let mut number = itoa::Buffer::new();
                for name in &names {
                    for r in ranges {
                        for i in r.lo..=r.hi {
                            let digits = number.format(i);
                            let mut n = String::with_capacity(longest);
                            n.push_str(name);
                            n.extend(std::iter::repeat_n(
                                '0',
                                r.width.saturating_sub(digits.len()),
                            ));
                            n.push_str(digits);
                            next.push(n);
                        }
                    }
                }
                names = next;
            }
        }
    }
    names
}

/// How many numbers a bracket group holds (saturating).
fn group_size(ranges: &[Range]) -> usize {
    ranges.iter().fold(0usize, |n, r| {
        n.saturating_add(
            usize::try_from(r.hi - r.lo)
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        )
    })
}

/// `node01a` -> (`node`, 1, 2, `a`). None if there are no digits, or too
/// many for a `u64` (such a name is then kept whole).
fn split_last_number(name: &str) -> Option<(&str, u64, usize, &str)> {
    let end = name.rfind(|c: char| c.is_ascii_digit())? + 1;
    let start = name[..end]
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .len();
    let value = name[start..end].parse().ok()?;
    Some((&name[..start], value, end - start, &name[end..]))
}

fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Turns numbers written as (value, width) into bracket items. Greedy from
/// the smallest: a range takes its lower bound's width, and grows only while
/// the next number *as that range would write it* is in the set, so the
/// expansion is exactly the numbers consumed (`9,10` -> `9-10`, `09,10` ->
/// `09-10`, but `1,01,010` stay apart).
/// `numbers` (value, written width), sorted and without repeats, as
/// ranges: runs of consecutive values written alike (`8-10` takes `10` at
/// its natural width). One pass along the sorted numbers per run: runs of
/// different widths may interleave, so each number taken is marked.
fn ranges(numbers: &[(u64, usize)]) -> Vec<String> {
    let mut taken = vec![false; numbers.len()];
    let mut items = Vec::new();
    for start in 0..numbers.len() {
        if taken[start] {
            continue;
        }
        taken[start] = true;
        let (lo, width) = numbers[start];
        let (mut hi, mut at) = (lo, start + 1);
        while let Some(next) = hi.checked_add(1) {
            let wanted = (next, width.max(digits(next)));
            while at < numbers.len() && numbers[at] < wanted {
                at += 1;
            }
            if at == numbers.len() || numbers[at] != wanted || taken[at] {
                break;
            }
            taken[at] = true;
            hi = next;
        }
        let mut item = String::new();
        push_number(&mut item, lo, width);
        if hi != lo {
            item.push('-');
            push_number(&mut item, hi, width);
        }
        items.push(item);
    }
    items
}

/// `value` zero-padded to `width`, appended.
fn push_number(out: &mut String, value: u64, width: usize) {
    let mut number = itoa::Buffer::new();
    let digits = number.format(value);
    out.extend(std::iter::repeat_n('0', width.saturating_sub(digits.len())));
    out.push_str(digits);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `ranges` as it was first written, on a set: take the smallest, then
    /// its successors while they are there.
    fn ranges_by_set(numbers: &[(u64, usize)]) -> Vec<String> {
        let mut set: std::collections::BTreeSet<_> = numbers.iter().copied().collect();
        let mut items = Vec::new();
        while let Some((lo, width)) = set.pop_first() {
            let mut hi = lo;
            while set.remove(&(hi + 1, width.max(digits(hi + 1)))) {
                hi += 1;
            }
            items.push(if hi == lo {
                format!("{lo:0width$}")
            } else {
                format!("{lo:0width$}-{hi:0width$}")
            });
        }
        items
    }

    proptest! {
        /// Runs of mixed widths interleaved: the same ranges as the set walk.
        #[test]
        fn ranges_as_a_set_walk_finds_them(mut numbers in prop::collection::vec((0u64..130, 1usize..4), 0..60)) {
            numbers.sort_unstable();
            numbers.dedup();
            prop_assert_eq!(ranges(&numbers), ranges_by_set(&numbers));
        }
    }

    fn ex(expr: &str) -> Vec<String> {
        expand(expr, DEFAULT_LIMIT).unwrap()
    }

    #[test]
    fn expands_examples() {
        assert_eq!(ex("node[01-03]"), ["node01", "node02", "node03"]);
        let ten = ex("node[01-10]");
        assert_eq!((ten.len(), &*ten[0], &*ten[9]), (10, "node01", "node10"));
        let cent = ex("node[001-100]");
        assert_eq!(
            (cent.len(), &*cent[0], &*cent[99]),
            (100, "node001", "node100")
        );
        assert_eq!(ex("node[8-10]"), ["node8", "node9", "node10"]);
        assert_eq!(ex("[098-101]"), ["098", "099", "100", "101"]);
        assert_eq!(ex("r[1-2]n[1-2]"), ["r1n1", "r1n2", "r2n1", "r2n2"]);
        assert_eq!(ex("r[1-2]n[01-04]").len(), 8);
        assert_eq!(ex("cn[1,3,5-7]x"), ["cn1x", "cn3x", "cn5x", "cn6x", "cn7x"]);
        assert_eq!(ex("a,b[1-3,5],c"), ["a", "b1", "b2", "b3", "b5", "c"]);
        assert_eq!(ex("my-node_1.local"), ["my-node_1.local"]);
    }

    #[test]
    fn whitespace_and_empty_terms() {
        assert!(ex("").is_empty());
        assert!(ex(" \t\n").is_empty());
        assert_eq!(ex(" a , b[1-2] "), ["a", "b1", "b2"]);
        assert_eq!(ex("a,,b,"), ["a", "b"]);
        assert_eq!(ex(",,"), Vec::<String>::new());
    }

    #[test]
    fn drops_duplicates_keeping_first() {
        assert_eq!(ex("n[1-3],n2,n[3-4]"), ["n1", "n2", "n3", "n4"]);
        assert_eq!(ex("b,a,b,c,a"), ["b", "a", "c"]);
        assert_eq!(ex("n[1,1]"), ["n1"]);
        assert_eq!(count("n[1,1],n1").unwrap(), 3);
        // Two groups side by side can write one name twice: (1,11), (11,1).
        let names = ex("n[1-12][1-12]");
        assert_eq!(names.iter().filter(|n| *n == "n111").count(), 1);
        assert_eq!(names.len(), 142);
        // Ranges of one group overlapping through their widths.
        assert_eq!(ex("n[9-10,09-10]"), ["n9", "n10", "n09"]);
    }

    #[test]
    fn refuses_bad_expressions() {
        // (expression, text the message must quote, expected variant)
        let cases = [
            ("node[1-3", "`node[1-3`", "Unbalanced"),
            ("node1-3]", "`node1-3]`", "Unbalanced"),
            ("a,n[1,2,b", "`n[1,2,b`", "Unbalanced"),
            ("node[[1-3]]", "`node[[1-3]]`", "Unbalanced"),
            ("node[1]]", "`node[1]]`", "Unbalanced"),
            ("node[]", "`node[]`", "EmptyBracket"),
            ("node[a-c]", "`node[a-c]`", "NotANumber"),
            ("node[1,]", "`node[1,]`", "NotANumber"),
            ("node[1-]", "`node[1-]`", "NotANumber"),
            ("node[1-2-3]", "`1-2-3`", "NotANumber"),
            ("node[10-1]", "`node[10-1]`", "ReversedRange"),
            (
                "ok,a b",
                "' ' is not allowed in host name `a b`",
                "InvalidChar",
            ),
            (
                "node/1",
                "'/' is not allowed in host name `node/1`",
                "InvalidChar",
            ),
            ("$HOST", "`$HOST`", "InvalidChar"),
            ("a;reboot", "`a;reboot`", "InvalidChar"),
            ("'a'", "`'a'`", "InvalidChar"),
            ("\"a\"", "`\"a\"`", "InvalidChar"),
            (
                "n[1-99999999999999999999]",
                "`99999999999999999999`",
                "NumberTooLarge",
            ),
        ];
        for (expr, quoted, variant) in cases {
            let e = expand(expr, DEFAULT_LIMIT).unwrap_err();
            assert!(format!("{e:?}").starts_with(variant), "{expr}: got {e:?}");
            assert!(
                e.to_string().contains(quoted),
                "{expr}: `{e}` lacks {quoted}"
            );
            assert_eq!(count(expr).unwrap_err(), e);
        }
        let reversed = expand("node[10-1]", 1).unwrap_err().to_string();
        assert!(reversed.contains("`10-1`") && reversed.contains("lower bound must come first"));
    }

    #[test]
    fn enforces_the_limit_before_expanding() {
        use HostlistError::TooMany;
        let huge = "n[0-99999999999999]x[0-99999999999]";
        assert_eq!(count(huge).unwrap(), 100_000_000_000_000 * 100_000_000_000);
        assert!(matches!(
            expand(huge, DEFAULT_LIMIT),
            Err(TooMany {
                limit: DEFAULT_LIMIT,
                ..
            })
        ));
        let sum = "n[0-999999],m[0-999999]x[1-1000000]";
        assert_eq!(count(sum).unwrap(), 1_000_001_000_000);
        let max = "a[0-18446744073709551615]b[0-18446744073709551615]c[0-18446744073709551615]";
        assert_eq!(count(max).unwrap(), u128::MAX);
        assert!(matches!(
            expand("n[1-10]", 9),
            Err(TooMany {
                limit: 9,
                count: 10
            })
        ));
        assert_eq!(expand("n[1-10]", 10).unwrap().len(), 10);
        // Counted before dedup: 4 written, 2 distinct.
        assert!(matches!(expand("n[1-2],n[1-2]", 3), Err(TooMany { .. })));
        let message = expand("n[0-999999999999]", 5).unwrap_err().to_string();
        assert!(message.contains("1000000000000 names") && message.contains("limit of 5"));
    }

    #[test]
    fn compresses() {
        let nodes = ["node01", "node02", "node03", "node04", "node05", "node07"];
        assert_eq!(compress(nodes), "node[01-05,07]");
        assert_eq!(compress(["node07"]), "node07");
        assert_eq!(compress(["node8", "node9", "node10"]), "node[8-10]");
        assert_eq!(compress(["node09", "node10", "node11"]), "node[09-11]");
        assert_eq!(compress(["node1", "node01", "node010"]), "node[1,01,010]");
        assert_eq!(
            compress(["c3x", "c1x", "c2x", "login", "c5"]),
            "c5,c[1-3]x,login"
        );
        assert_eq!(compress(["r2n1", "r1n2", "r1n1"]), "r1n[1-2],r2n1");
        assert_eq!(compress(["node", "node1", "node2"]), "node,node[1-2]");
        assert_eq!(compress(Vec::<String>::new()), "");
    }

    fn assert_round_trip(names: &[String]) {
        let compressed = compress(names);
        let back = ex(&compressed);
        let want: HashSet<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(back.len(), want.len(), "{compressed} from {names:?}");
        assert_eq!(
            back.iter().map(String::as_str).collect::<HashSet<_>>(),
            want,
            "{compressed}"
        );
    }

    #[test]
    fn round_trips() {
        let sets: &[&[&str]] = &[
            &["node1", "node01", "node010", "node10", "node001", "node2"],
            &["n8", "n9", "n10", "n09", "n010", "n11", "n099", "n100"],
            &["n0", "n00", "n000", "n1", "n01", "n99", "n100"],
            &[
                "login",
                "a1b2",
                "a1b3",
                "a2b2",
                "x18446744073709551615",
                "x99999999999999999999",
            ],
        ];
        for set in sets {
            assert_round_trip(&set.iter().map(ToString::to_string).collect::<Vec<_>>());
        }
        // Pseudo-random mixed-padding sets (a fixed LCG keeps it reproducible).
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        for _ in 0..300 {
            let names: Vec<String> = (0..next(40))
                .map(|_| {
                    let prefix = ["n", "node", "r1n"][next(3) as usize];
                    let suffix = ["", "x"][next(2) as usize];
                    let width = next(4) as usize;
                    format!("{prefix}{:0width$}{suffix}", next(120))
                })
                .collect();
            assert_round_trip(&names);
        }
    }
}
