//! The cluster's topology: nodes, platforms and groups, merged from YAML
//! fragments in drop-in directories.
//!
//! `sources` finds the files (I/O), `yaml` turns a file's text into a
//! located tree (pure; `plain_yaml` reads the usual shape fast), `parse`
//! reads one fragment from it (pure), `merge` builds each fragment's nodes
//! and joins them, checking cross-references (pure). `split` cuts a large file into pieces (pure) that [`load`] reads
//! side by side.

mod diagnostic;
mod merge;
mod model;
mod parse;
mod plain_yaml;
mod sources;
mod split;
mod yaml;

pub use diagnostic::{Diagnostic, LoadErrors, Location};
pub use model::{Group, Node, Platform, RunSettings, Topology};
pub use parse::{
    check_variable_name, is_group_name, parse_duration, DriverSpec, DEFAULT_STATUS_OFF_EXIT_CODE,
    DEFAULT_TIMEOUT,
};
pub use sources::Resolved;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

/// A loaded topology with what the load noticed.
#[derive(Debug, Clone)]
pub struct LoadedTopology {
    /// The merged topology.
    pub topology: Topology,
    /// Non-fatal findings (a group member not defined, a platform replaced
    /// by a later directory's).
    pub warnings: Vec<Diagnostic>,
    /// Each file name and what it resolved to, in read order.
    pub files: Vec<(OsString, Resolved)>,
}

/// Load the topology from `dirs` (lowest precedence first).
pub fn load(dirs: &[PathBuf]) -> Result<LoadedTopology, LoadErrors> {
    load_with_files(dirs, &[])
}

/// Load the topology from `dirs` (lowest precedence first), then `files`,
/// each read as one more fragment of still higher precedence.
pub fn load_with_files(dirs: &[PathBuf], files: &[PathBuf]) -> Result<LoadedTopology, LoadErrors> {
    let mut sources = sources::resolve(dirs).map_err(LoadErrors)?;
    for (i, file) in files.iter().enumerate() {
        if !file.is_file() {
            return Err(LoadErrors(vec![Diagnostic::general(format!(
                "topology file {} does not exist",
                file.display()
            ))]));
        }
        let name = file.file_name().unwrap_or_default().to_os_string();
        sources.push((name, Resolved::File(file.clone()), dirs.len() + i));
    }
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let budget = parse::Budget::default();
    let mut errors = Vec::new();
    let mut prepared = Vec::new();
    for (_, resolved, precedence) in &sources {
        let Resolved::File(path) = resolved else {
            continue;
        };
        let label: Arc<str> = path.display().to_string().into();
        let text = match read_bounded(path).map(String::from_utf8) {
            Ok(Ok(text)) => text,
            Ok(Err(e)) => {
                errors.push(not_utf8(&label, e.as_bytes(), e.utf8_error()));
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::FileTooLarge => {
                errors.push(Diagnostic::general(format!("{label}: {e}")));
                continue;
            }
            Err(e) => {
                errors.push(Diagnostic::general(format!("{label}: cannot read: {e}")));
                continue;
            }
        };
        for piece in read(&label, &text, *precedence, threads, &budget) {
            match piece {
                Ok(piece) => prepared.push(piece),
                Err(mut e) => errors.append(&mut e),
            }
        }
    }
    if !errors.is_empty() {
        return Err(LoadErrors(errors));
    }
    let (topology, warnings) = merge::merge_prepared(prepared).map_err(LoadErrors)?;
    let files = sources
        .into_iter()
        .map(|(name, resolved, _)| (name, resolved))
        .collect();
    Ok(LoadedTopology {
        topology,
        warnings,
        files,
    })
}

/// The largest topology file read: 100,000 nodes, each with an address
/// and credentials of its own, take about 15 MiB.
pub const FILE_SIZE_LIMIT: u64 = 64 << 20;

/// The bytes of `path`, refused before reading if it is larger than
/// [`FILE_SIZE_LIMIT`] (or grows past it while read).
fn read_bounded(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let too_large = |size: u64| {
        std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!(
                "{} MiB, more than the limit of {} MiB for one topology file",
                size.div_ceil(1 << 20),
                FILE_SIZE_LIMIT >> 20
            ),
        )
    };
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    if size > FILE_SIZE_LIMIT {
        return Err(too_large(size));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(FILE_SIZE_LIMIT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > FILE_SIZE_LIMIT {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// A file that is not UTF-8, with where its first bad byte stands.
fn not_utf8(label: &Arc<str>, bytes: &[u8], e: std::str::Utf8Error) -> Diagnostic {
    let good = &bytes[..e.valid_up_to()];
    // Once, on the error path: no crate for it.
    #[allow(clippy::naive_bytecount)]
    let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
    let at = Location {
        file: label.clone(),
        line,
        column,
    };
    Diagnostic::at(&at, "not UTF-8 text (a topology file must be UTF-8)")
}

/// One file's text parsed and its nodes built, in file order: a large file
/// in pieces side by side on `threads` threads ([`split`]), else whole.
fn read(
    label: &Arc<str>,
    text: &str,
    precedence: usize,
    threads: usize,
    budget: &parse::Budget,
) -> Vec<Result<merge::Prepared, Vec<Diagnostic>>> {
    let one = |text: &str, first_line, threads| {
        parse::parse_at(label, text, first_line, budget).map(|fragment| {
            let fragment = parse::Fragment {
                precedence,
                ..fragment
            };
            merge::prepare(fragment, threads)
        })
    };
    let Some(pieces) = split::pieces(text, threads) else {
        return vec![one(text, 1, threads)];
    };
    std::thread::scope(|scope| {
        let (first, rest) = pieces.split_first().expect("cut in two at least");
        let others: Vec<_> = rest
            .iter()
            .map(|p| scope.spawn(move || one(&p.text, p.first_line, 1)))
            .collect();
        let mut read = vec![one(&first.text, first.first_line, 1)];
        read.extend(
            others
                .into_iter()
                .map(|t| t.join().expect("reading does not panic")),
        );
        read
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    fn write(dir: &Path, name: &str, text: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join(name), text).unwrap();
    }

    const SIM: &str = "platforms:\n  sim:\n    driver: sim\n";

    /// A large file, as [`load`] reads it in pieces side by side: the same
    /// nodes, in the same order, and the same errors at the same lines and
    /// columns, as read whole.
    #[test]
    fn a_large_file_read_in_pieces_is_read_as_whole() {
        let mut text = String::from("platforms:\n  p:\n    driver: d\nstatic_nodes:\n");
        for i in 0..12_000 {
            let bmc = format!("10.0.{}.{}", i / 256, i % 256);
            text.push_str(&format!("  n{i:05}:\n    platform: p\n    bmc: {bmc}\n"));
        }
        text.push_str("groups:\n  g: n[00001-00002]\n");
        let label: Arc<str> = "big.yaml".into();
        let whole = |text: &str| read(&label, text, 0, 1, &parse::Budget::default());
        let cut = |text: &str| read(&label, text, 0, 2, &parse::Budget::default());
        assert_eq!(cut(&text).len(), 2, "the test file is not cut");
        let messages = |read: Vec<Result<merge::Prepared, Vec<Diagnostic>>>| -> Vec<String> {
            read.into_iter()
                .filter_map(Result::err)
                .flatten()
                .map(|d| d.to_string())
                .collect()
        };
        let broken = text
            .replacen(
                "  n03000:\n    platform: p\n",
                "  n03000:\n    platfrm: p\n",
                1,
            )
            .replacen(
                "  n09000:\n    platform: p\n",
                "  n09000:\n    platform: [p]\n",
                1,
            );
        let errors = messages(whole(&broken));
        assert_eq!(
            errors,
            [
                "big.yaml:9005:3: node n03000: no platform (expected a \"platform\" key)",
                "big.yaml:27006:15: node n09000: platform: expected a single value, found a list"
            ]
        );
        assert_eq!(messages(cut(&broken)), errors);

        let merged = |read: Vec<Result<merge::Prepared, Vec<Diagnostic>>>| {
            let prepared = read.into_iter().map(|r| r.ok().unwrap()).collect();
            merge::merge_prepared(prepared).unwrap().0
        };
        let (whole, cut) = (merged(whole(&text)), merged(cut(&text)));
        assert_eq!(cut.nodes().len(), 12_000);
        assert_eq!(cut, whole);
        // A node defined twice, its definitions in two pieces: still an error.
        let twice = text.replacen("  n09000:\n", "  n00001:\n", 1);
        let prepared = read(&label, &twice, 0, 2, &parse::Budget::default())
            .into_iter()
            .map(|r| r.ok().unwrap())
            .collect();
        let errors = merge::merge_prepared(prepared).unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "big.yaml:27005:3: node n00001 is defined twice: first at big.yaml:8:3, again here"
        );
    }

    proptest::proptest! {
        /// Any text, YAML or not: a fragment or errors, never a panic.
        #[test]
        fn any_text_reads_or_is_refused(
            text in "([a-z0-9_]{1,6}|: |:|\n|  |- |\\[|\\]|\\{|\\}|, |#|'|\"|&a|\\*a|!t|\\||>|---\n|static_nodes:\n|platforms:\n|groups:\n|platform: |n\\[1-3\\])*"
        ) {
            let label: Arc<str> = "p.yaml".into();
            let _ = read(&label, &text, 0, 1, &parse::Budget::default());
        }
    }

    #[test]
    fn a_file_that_is_not_utf8_is_refused_with_its_line() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t.d");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("a.yaml"),
            b"static_nodes:\n  n\xc3\xa91: {platform: p}\n  n\xff2: {}\n",
        )
        .unwrap();
        let errors = load(std::slice::from_ref(&dir)).unwrap_err();
        let file = dir.join("a.yaml").display().to_string();
        assert_eq!(
            errors.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [format!(
                "{file}:3:4: not UTF-8 text (a topology file must be UTF-8)"
            )]
        );
    }

    #[test]
    fn a_file_over_the_size_limit_is_refused_unread() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t.d");
        fs::create_dir_all(&dir).unwrap();
        write(&dir, "10-sim.yaml", SIM);
        // Sparse: it takes no room, and is never read.
        let big = fs::File::create(dir.join("20-big.yaml")).unwrap();
        big.set_len(FILE_SIZE_LIMIT + 1).unwrap();
        let errors = load(std::slice::from_ref(&dir)).unwrap_err();
        let file = dir.join("20-big.yaml").display().to_string();
        assert_eq!(
            errors.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [format!(
                "{file}: 65 MiB, more than the limit of 64 MiB for one topology file"
            )]
        );
    }

    #[test]
    fn a_later_directory_replaces_a_file_of_the_same_name() {
        let tmp = tempfile::tempdir().unwrap();
        let (vendor, admin) = (tmp.path().join("vendor"), tmp.path().join("admin"));
        write(&vendor, "10-sim.yaml", SIM);
        write(
            &vendor,
            "20-nodes.yaml",
            "static_nodes:\n  old1:\n    platform: sim\n",
        );
        write(
            &admin,
            "20-nodes.yaml",
            "static_nodes:\n  new1:\n    platform: sim\n",
        );
        let loaded = load(&[vendor, admin.clone()]).unwrap();
        let names: Vec<&str> = loaded.topology.nodes().iter().map(|n| &*n.name).collect();
        assert_eq!(names, ["new1"]);
        assert_eq!(
            loaded.files[1].1,
            Resolved::File(admin.join("20-nodes.yaml"))
        );
    }

    #[test]
    fn an_empty_file_or_a_dev_null_link_masks() {
        let tmp = tempfile::tempdir().unwrap();
        let (vendor, admin) = (tmp.path().join("vendor"), tmp.path().join("admin"));
        write(&vendor, "10-sim.yaml", SIM);
        write(
            &vendor,
            "50-demo.yaml",
            "static_nodes:\n  demo1:\n    platform: sim\n",
        );
        write(
            &vendor,
            "60-more.yml",
            "static_nodes:\n  more1:\n    platform: sim\n",
        );
        write(&admin, "50-demo.yaml", "");
        std::os::unix::fs::symlink("/dev/null", admin.join("60-more.yml")).unwrap();
        let loaded = load(&[vendor, admin.clone()]).unwrap();
        assert!(loaded.topology.nodes().is_empty());
        assert_eq!(
            loaded.files[1].1,
            Resolved::Masked(admin.join("50-demo.yaml"))
        );
        assert_eq!(
            loaded.files[2].1,
            Resolved::Masked(admin.join("60-more.yml"))
        );
    }

    #[test]
    fn files_are_read_in_lexical_order_across_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        write(
            &b,
            "10-first.yaml",
            "static_nodes:\n  x1:\n    platform: sim\n",
        );
        write(
            &a,
            "20-second.yaml",
            "static_nodes:\n  x2:\n    platform: sim\n",
        );
        write(&b, "00-sim.yaml", SIM);
        write(&a, "README", "not a fragment");
        write(&a, ".30-hidden.yaml", "{ broken");
        let loaded = load(&[a, b]).unwrap();
        let names: Vec<&str> = loaded.topology.nodes().iter().map(|n| &*n.name).collect();
        assert_eq!(names, ["x1", "x2"]);
        assert_eq!(loaded.files.len(), 3);
    }

    #[test]
    fn a_missing_directory_contributes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        write(&tmp.path().join("t"), "sim.yaml", SIM);
        let loaded = load(&[tmp.path().join("nope"), tmp.path().join("t")]).unwrap();
        assert_eq!(loaded.topology.platforms.len(), 1);
    }

    #[test]
    fn errors_from_every_file_are_collected() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("t");
        write(&d, "a.yaml", "bogus: 1\n");
        write(&d, "b.yaml", "platforms:\n  p: {}\n");
        std::os::unix::fs::symlink("/nonexistent", d.join("c.yaml")).unwrap();
        let errors = load(std::slice::from_ref(&d)).unwrap_err().0;
        assert_eq!(
            errors.len(),
            1,
            "a dangling link fails before parsing: {errors:?}"
        );
        assert!(errors[0]
            .to_string()
            .starts_with(&format!("{}:", d.join("c.yaml").display())));
        fs::remove_file(d.join("c.yaml")).unwrap();
        let errors: Vec<String> = load(std::slice::from_ref(&d))
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with(&format!(
            "{}:1:1: unknown key \"bogus\"",
            d.join("a.yaml").display()
        )));
        assert!(errors[1].starts_with(&format!(
            "{}:2:3: platform p: no commands",
            d.join("b.yaml").display()
        )));
    }

    #[test]
    fn the_reference_topology_loads_unchanged_from_a_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let text = include_str!("../../tests/fixtures/reference/topology.yaml");
        write(tmp.path(), "topology.yaml", text);
        let loaded = load(&[tmp.path().to_path_buf()]).unwrap();
        let t = &loaded.topology;
        assert_eq!(t.nodes().len(), 3);
        assert_eq!(
            &t.node("node03").unwrap().variables["ipmi_password"],
            "adminpass"
        );
        assert_eq!(t.platforms["aws"].run.status_off_exit_code, 123);
        assert!(loaded.warnings.is_empty());
    }

    /// Dropped into the admin's directory over the shipped platforms (which
    /// define ipmi, aws and azure too), the reference file still loads: its
    /// platforms replace the packaged ones, with a warning each.
    #[test]
    fn the_reference_topology_loads_over_the_shipped_platforms() {
        let tmp = tempfile::tempdir().unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("topology.d");
        let admin = tmp.path().join("admin");
        write(
            &admin,
            "topology.yaml",
            include_str!("../../tests/fixtures/reference/topology.yaml"),
        );
        let loaded = load(&[shipped, admin.clone()]).unwrap();
        let t = &loaded.topology;
        assert!(t.node("node01").is_some());
        let ipmi = &t.platforms["ipmi"];
        assert_eq!(
            ipmi.defined_at.file.as_ref(),
            admin.join("topology.yaml").display().to_string()
        );
        assert_eq!(ipmi.variables, ["name", "ipmi_username"]);
        let replaced: Vec<&str> = loaded
            .warnings
            .iter()
            .filter(|w| w.message.contains("replaces the one at"))
            .map(|w| w.message.split(':').next().unwrap())
            .collect();
        assert_eq!(
            replaced,
            ["platform ipmi", "platform aws", "platform azure"]
        );
    }
}
