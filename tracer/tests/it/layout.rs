//! The architecture as the sources show it: layers import only downward,
//! no source file grows past 600 lines nor function past 85, and the
//! README's Layout table names exactly the folders and loose files of
//! `tracer/src`.

use std::{
    fs,
    path::{Path, PathBuf},
};

/// Each top-level module of `tracer/src` and its layer: a module may import
/// from its own layer and those below, never from above.
const LAYERS: &[(&str, u8)] = &[
    ("shutdown", 0),
    ("kernel", 0),
    ("engine", 1),
    ("sockets", 2),
    ("serve", 3),
    ("cli", 4),
    ("daemon", 4),
    ("trace", 4),
    ("top", 4),
];

const MAX_LINES: usize = 600;

/// Product code only: test functions and fixtures may run longer.
const MAX_FUNCTION_LINES: usize = 85;

/// Source directories of the workspace, from `tracer/`.
const SOURCE_DIRS: &[&str] = &[
    "tracer/src",
    "tracer/tests",
    "tracer-common/src",
    "tracer-ebpf/src",
    "testkit/src",
    "bench/src",
    "xtask/src",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every Rust file of [`SOURCE_DIRS`].
fn workspace_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
        rust_files(&root, &mut files);
    }
    files
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`kernel` for `src/kernel/btf.rs`).
fn top_module(file: &Path) -> String {
    let rel = file.strip_prefix(src()).expect("under src");
    let first = rel.components().next().expect("a component");
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_string()
}

fn layer_of(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// Top-level modules named after `crate::` in a file, including inside a
/// `use crate::{a::.., b::..}` group.
fn crate_imports(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            let mut at_item_start = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                if depth == 1 && (c.is_alphanumeric() || c == '_') && at_item_start {
                    item.push(c);
                    continue;
                }
                if !item.is_empty() {
                    found.push(std::mem::take(&mut item));
                }
                at_item_start = depth == 1 && (c == ',' || (c.is_whitespace() && at_item_start));
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push(name);
        }
    }
    found
}

#[test]
fn layers_import_only_downward() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let module = top_module(file);
        let Some(own) = layer_of(&module) else {
            continue; // main.rs and lib.rs sit above everything
        };
        let text = fs::read_to_string(file).expect("read source");
        for import in crate_imports(&text) {
            let layer = layer_of(&import)
                .unwrap_or_else(|| panic!("{}: unknown module crate::{import}", file.display()));
            if layer > own {
                wrong.push(format!(
                    "{} ({module}) imports crate::{import}",
                    file.display()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "imports upward:\n{}", wrong.join("\n"));
    assert!(files.len() > 50, "found only {} files", files.len());
}

#[test]
fn the_import_scanner_sees_groups() {
    let text = "use crate::{\n    kernel::clock,\n    serve::{http, shared::Shared},\n    top,\n};\nuse crate::engine::Engine;";
    assert_eq!(crate_imports(text), ["kernel", "serve", "top", "engine"]);
}

#[test]
fn every_layer_is_a_known_module() {
    let lib = fs::read_to_string(src().join("lib.rs")).expect("read lib.rs");
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    let mut known: Vec<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
    known.sort_unstable();
    assert_eq!(declared, known, "lib.rs and LAYERS disagree");
}

#[test]
fn no_source_file_is_over_600_lines() {
    let files = workspace_files();
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = fs::read_to_string(f).expect("read source").lines().count();
            (lines > MAX_LINES).then(|| format!("{}: {lines} lines", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn readme_layout_names_every_folder_and_loose_file() {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
        .expect("read README");
    let table = readme
        .split("## Layout")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Layout section");
    // Every path the table names, with `a.rs`, `b.rs` after a full path
    // meaning siblings of it.
    let mut listed = Vec::new();
    for row in table.lines().filter(|l| l.starts_with("| `tracer/src/")) {
        let cell = row.split('|').nth(1).expect("a path cell");
        let mut dir = String::new();
        for path in cell
            .split('`')
            .filter(|p| p.contains(".rs") || p.ends_with('/'))
        {
            let full = if let Some(p) = path.strip_prefix("tracer/src/") {
                dir = p
                    .rsplit_once('/')
                    .map(|(d, _)| format!("{d}/"))
                    .unwrap_or_default();
                p.to_string()
            } else {
                format!("{dir}{path}")
            };
            listed.push(full.trim_end_matches('/').to_string());
        }
    }
    let mut actual: Vec<String> = fs::read_dir(src())
        .expect("read src")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    actual.sort();
    assert_eq!(listed, actual, "README Layout vs tracer/src");
}

/// Functions longer than `max` lines in `text`, by name: from a `fn` line
/// to the `}` at its indentation. Code after a `#[cfg(test)]` line is left
/// out.
fn long_functions(text: &str, max: usize) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text
        .lines()
        .take_while(|l| l.trim() != "#[cfg(test)]")
        .collect();
    let mut long = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        let indent = &line[..line.len() - code.len()];
        let after_vis = code
            .strip_prefix("pub(crate) ")
            .or_else(|| code.strip_prefix("pub(super) "))
            .or_else(|| code.strip_prefix("pub "))
            .unwrap_or(code);
        let after_kw = ["async ", "const ", "unsafe "]
            .iter()
            .fold(after_vis, |c, kw| c.strip_prefix(kw).unwrap_or(c));
        let Some(rest) = after_kw.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let closing = format!("{indent}}}");
        if let Some(end) = lines[i..].iter().position(|l| *l == closing)
            && end + 1 > max
        {
            long.push((name, end + 1));
        }
    }
    long
}

#[test]
fn the_function_scanner_measures_functions() {
    let text = "fn short() {\n    a();\n}\n\n    pub async fn long() {\n        a();\n        b();\n    }\n#[cfg(test)]\nfn ignored() {\n\n\n\n}\n";
    assert_eq!(long_functions(text, 3), vec![("long".to_owned(), 4)]);
    assert!(long_functions(text, 4).is_empty());
}

#[test]
fn no_function_is_over_85_lines() {
    let files = workspace_files();
    let long: Vec<String> = files
        .iter()
        // Integration tests and unit-test files: their cases run long.
        .filter(|f| {
            let path = f.to_string_lossy();
            !path.contains("/tracer/tests/")
                && !path.ends_with("tests.rs")
                && !path.contains("/tests/")
        })
        .flat_map(|f| {
            let text = fs::read_to_string(f).expect("read source");
            long_functions(&text, MAX_FUNCTION_LINES)
                .into_iter()
                .map(move |(name, n)| format!("{}: {name}, {n} lines", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_FUNCTION_LINES} lines:\n{}",
        long.join("\n")
    );
}
