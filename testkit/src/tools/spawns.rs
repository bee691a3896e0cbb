//! The check that [`super::TOOLS`] names every program the code starts: it
//! scans the sources for `Command::new(...)`, resolves the few spawns
//! through a variable with [`THROUGH`], adds the programs
//! started by a wrapper or a shell script from [`INDIRECT`], and fails
//! naming each program the list lacks.

use std::path::{Path, PathBuf};

use super::TOOLS;

/// The source trees scanned (relative to the workspace root).
const SCANNED: [&str; 5] = [
    "tracer/tests",
    "tracer/src",
    "testkit/src",
    "bench/src",
    "xtask/src",
];

/// Split so that this file does not contain the call it looks for.
const NEEDLE: &str = concat!("Command", "::new(");

/// What a non-literal `Command::new` argument starts.
enum Via {
    /// These programs (a variable the callers fill).
    Programs(&'static [&'static str]),
    /// A binary of this workspace: nothing to install.
    Ours,
}

/// Every `Command::new(expr)` whose `expr` is not a string literal:
/// (file, expr, what it starts). A new one fails the test until it is
/// added here; an entry the code no longer has fails it too.
const THROUGH: &[(&str, &str, Via)] = &[
    // `tracer()`, the binary under test, for every test area.
    ("tracer/tests/it/main.rs", "tracer_bin()", Via::Ours),
    // A symlink to /usr/bin/python3 named like the leaking process.
    ("testkit/src/leaky.rs", "&exe", Via::Programs(&["python3"])),
    (
        "xtask/src/cmd.rs",
        "std::env::var_os(\"CARGO\").unwrap_or_else(|| \"cargo\".into())",
        Via::Programs(&["cargo"]),
    ),
    ("xtask/src/package.rs", "binary", Via::Ours),
    ("xtask/src/run.rs", "&binary", Via::Ours),
    // target/release/tracer-bench.
    ("xtask/src/bench.rs", "&bench", Via::Ours),
    ("bench/src/procs.rs", "binary", Via::Ours),
    // The bench itself, as `tracer-bench hold`.
    ("bench/src/hold.rs", "&self.exe", Via::Ours),
    ("bench/src/main.rs", "&plan.tracer", Via::Ours),
];

/// Programs started by another program: a wrapper's argument (`ip netns
/// exec NS python3`, `stdbuf -oL tcpstates`, `cargo deb`) or a command in
/// a shell script (`unshare ... sh -c "umount ..."`). Each entry is (file,
/// a snippet of it that shows the start, program); a snippet the file no
/// longer has fails the test, so a changed script gets looked at again.
const INDIRECT: &[(&str, &str, &str)] = &[
    ("tracer/tests/it/cli.rs", "\"sh\",", "sh"),
    (
        "tracer/tests/it/cli.rs",
        "umount /sys/kernel/tracing",
        "umount",
    ),
    ("tracer/tests/it/cli.rs", "mount -t tmpfs", "mount"),
    (
        "tracer/tests/it/cli.rs",
        "mkdir /sys/kernel/tracing/events",
        "mkdir",
    ),
    ("tracer/tests/it/cli.rs", "sleep 2", "sleep"),
    ("tracer/tests/it/cli.rs", "exec setpriv", "setpriv"),
    (
        "tracer/tests/it/systemd.rs",
        "\"python3\", \"-c\"",
        "python3",
    ),
    ("tracer/tests/it/systemd.rs", "\"ss\", \"-Htln\"", "ss"),
    ("testkit/src/netns.rs", "\"ip\", \"link\"", "ip"),
    (
        "tracer/tests/it/daemon/timewait.rs",
        "\"sysctl\",",
        "sysctl",
    ),
    ("tracer/tests/it/daemon/random.rs", "\"sysctl\",", "sysctl"),
    (
        "tracer/tests/it/daemon/owners.rs",
        "\"/usr/bin/python3\"]",
        "python3",
    ),
    (
        "tracer/tests/it/trace/mod.rs",
        "\"/usr/sbin/tcpstates\"",
        "tcpstates",
    ),
    ("xtask/src/test.rs", "\"cargo\",", "cargo"),
    // The kernel matrix: vng under timeout, and the guest's script.
    ("xtask/src/vm/mod.rs", "\"vng\"", "vng"),
    ("xtask/src/vm/mod.rs", "\"sh {}\"", "sh"),
    ("xtask/src/vm/results.rs", "mount -t tracefs", "mount"),
    ("xtask/src/vm/results.rs", "ip link set lo up", "ip"),
    ("xtask/src/vm/results.rs", "mkdir -p /run/netns", "mkdir"),
    ("xtask/src/vm/results.rs", "modprobe tcp_diag", "modprobe"),
    (
        "xtask/src/package.rs",
        "[\"deb\", \"--version\"]",
        "cargo-deb",
    ),
];

/// The workspace root (this crate lives one level below it).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// One `Command::new(...)`: its argument's text and the line it is on.
#[derive(Debug, PartialEq, Eq)]
struct Spawn {
    arg: String,
    line: usize,
}

/// Every `Command::new(...)` in `source` outside `//` comments, with the
/// argument's text up to its closing parenthesis (strings may contain
/// parentheses).
fn spawns(source: &str) -> Vec<Spawn> {
    let mut found = Vec::new();
    for (start, _) in source.match_indices(NEEDLE) {
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        if source[line_start..start].trim_start().starts_with("//") {
            continue;
        }
        let rest = &source[start + NEEDLE.len()..];
        let (mut depth, mut in_string, mut escaped, mut end) = (0usize, false, false, None);
        for (i, c) in rest.char_indices() {
            match (in_string, c) {
                (true, _) if escaped => escaped = false,
                (true, '\\') => escaped = true,
                (true, '"') => in_string = false,
                (true, _) => {}
                (false, '"') => in_string = true,
                (false, '(') => depth += 1,
                (false, ')') if depth == 0 => {
                    end = Some(i);
                    break;
                }
                (false, ')') => depth -= 1,
                _ => {}
            }
        }
        if let Some(end) = end {
            found.push(Spawn {
                arg: rest[..end].trim().trim_end_matches(',').trim().to_owned(),
                line: source[..start].matches('\n').count() + 1,
            });
        }
    }
    found
}

/// The program a string-literal argument names (`"/usr/bin/python3"` is
/// `python3`), or None for anything else.
fn literal_program(arg: &str) -> Option<&str> {
    let inner = arg.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('"') {
        return None;
    }
    inner.rsplit('/').next()
}

/// The `.rs` files under `dir`, relative to the workspace root, sorted.
fn rust_files(root: &Path, dir: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = format!("{dir}/{name}");
        if entry.path().is_dir() {
            rust_files(root, &rel, out);
        } else if name.ends_with(".rs") {
            out.push(rel);
        }
    }
    out.sort();
}

/// Of `spawned` (program, where), those the list does not name, with every
/// place each is started.
fn missing_from_list(spawned: &[(String, String)]) -> Vec<String> {
    let mut missing: Vec<String> = Vec::new();
    for (program, _) in spawned {
        if !TOOLS.iter().any(|t| t.command == program) && !missing.contains(program) {
            missing.push(program.clone());
        }
    }
    missing
        .into_iter()
        .map(|program| {
            let places: Vec<&str> = spawned
                .iter()
                .filter(|(p, _)| *p == program)
                .map(|(_, at)| at.as_str())
                .collect();
            format!("`{program}` (started at {})", places.join(", "))
        })
        .collect()
}

#[test]
fn finds_a_program_in_a_made_up_snippet() {
    let source = concat!(
        "fn f() {\n",
        "    let _ = std::process::Command",
        "::new(\"frobnicate\").arg(\"(\");\n",
        "    // Command",
        "::new(\"in-a-comment\")\n",
        "    let _ = Command",
        "::new(\n        \"/usr/sbin/spread-out\",\n    );\n",
        "    let _ = Command",
        "::new(path_of(\"x\"));\n",
        "}\n",
    );
    let found = spawns(source);
    let args: Vec<(&str, usize)> = found.iter().map(|s| (s.arg.as_str(), s.line)).collect();
    assert_eq!(
        args,
        [
            ("\"frobnicate\"", 2),
            ("\"/usr/sbin/spread-out\"", 4),
            ("path_of(\"x\")", 7),
        ]
    );
    assert_eq!(literal_program(&found[0].arg), Some("frobnicate"));
    assert_eq!(literal_program(&found[1].arg), Some("spread-out"));
    assert_eq!(literal_program(&found[2].arg), None);
    // And the check names what the list lacks, but not what it has.
    let spawned = [
        ("frobnicate".to_owned(), "f.rs:2".to_owned()),
        ("bpftool".to_owned(), "f.rs:3".to_owned()),
    ];
    assert_eq!(
        missing_from_list(&spawned),
        ["`frobnicate` (started at f.rs:2)"]
    );
}

#[test]
fn every_started_program_is_in_the_installer_list() {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in SCANNED {
        let before = files.len();
        rust_files(&root, dir, &mut files);
        assert!(files.len() > before, "no sources under {dir}");
    }
    let mut spawned: Vec<(String, String)> = Vec::new();
    let mut unresolved = Vec::new();
    let mut used_through = vec![false; THROUGH.len()];
    for file in &files {
        let source = std::fs::read_to_string(root.join(file)).expect("read a source file");
        for spawn in spawns(&source) {
            let at = format!("{file}:{}", spawn.line);
            if let Some(program) = literal_program(&spawn.arg) {
                spawned.push((program.to_owned(), at));
                continue;
            }
            let Some(i) = THROUGH
                .iter()
                .position(|(f, expr, _)| f == file && *expr == spawn.arg)
            else {
                unresolved.push(format!("{at}: {NEEDLE}{})", spawn.arg));
                continue;
            };
            used_through[i] = true;
            match &THROUGH[i].2 {
                Via::Programs(programs) => {
                    spawned.extend(programs.iter().map(|p| ((*p).to_owned(), at.clone())));
                }
                Via::Ours => {}
            }
        }
    }
    let stale = THROUGH
        .iter()
        .zip(&used_through)
        .filter(|(_, used)| !**used)
        .map(|((file, expr, _), _)| format!("{file}: {expr}"));
    let mut problems: Vec<String> = stale
        .map(|s| format!("THROUGH names a spawn the code no longer has: {s}"))
        .collect();
    problems.extend(
        unresolved
            .into_iter()
            .map(|u| format!("a spawn THROUGH does not resolve: {u}")),
    );
    for (file, snippet, program) in INDIRECT {
        let source = std::fs::read_to_string(root.join(file)).unwrap_or_default();
        if source.contains(snippet) {
            spawned.push(((*program).to_owned(), format!("{file} (`{snippet}`)")));
        } else {
            problems.push(format!("INDIRECT: {file} no longer has `{snippet}`"));
        }
    }
    if spawned.len() < 20 {
        problems.push(format!(
            "only {} spawns found: is the scanner broken?",
            spawned.len()
        ));
    }
    problems.extend(
        missing_from_list(&spawned)
            .into_iter()
            .map(|m| format!("missing from TOOLS (add it with its package): {m}")),
    );
    assert!(
        problems.is_empty(),
        "the installer list in testkit/src/tools/mod.rs (or the tables in \
         testkit/src/tools/spawns.rs) does not match the code:\n{}",
        problems.join("\n")
    );
}
