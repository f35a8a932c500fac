//! The documentation cites files, test targets and tests by path and name,
//! and a refactor that moves them leaves the citations behind. These tests
//! read every Markdown file of the repository (outside vendor/ and target/)
//! and fail on any citation of something that does not exist, listing each
//! one with its file and line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the node crate is in the workspace")
        .to_path_buf()
}

/// Every file under `dir` (from the root) whose name ends with one of
/// `extensions`, skipping vendor/, target/ and hidden directories.
fn files(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root().join(dir)).expect("readable directory") {
        let entry = entry.expect("directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = dir.join(&name);
        if entry.file_type().expect("file type").is_dir() {
            if name != "vendor" && name != "target" && !name.starts_with('.') {
                found.extend(files(&path, extensions));
            }
        } else if extensions.iter().any(|e| name.ends_with(&format!(".{e}"))) {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// A Markdown file: its path from the root, and its text.
struct Doc {
    path: PathBuf,
    text: String,
}

fn docs() -> Vec<Doc> {
    let docs: Vec<Doc> = files(Path::new(""), &["md"])
        .into_iter()
        .map(|path| Doc {
            text: std::fs::read_to_string(root().join(&path)).expect("readable Markdown"),
            path,
        })
        .collect();
    assert!(
        docs.iter().any(|d| d.path == Path::new("docs/design.md")),
        "docs/design.md is not among the Markdown files found"
    );
    docs
}

/// Fails listing every problem, if there is any.
fn assert_none(problems: Vec<String>, what: &str) {
    assert!(problems.is_empty(), "{what}:\n{}", problems.join("\n"));
}

// Paths.

/// Extensions of the files the docs cite.
const EXTENSIONS: [&str; 9] = [
    "rs", "md", "toml", "yaml", "yml", "json", "sh", "proto", "svg",
];

/// The path-like words of `line`: runs of the characters paths are made of,
/// `{a,b}` alternatives included, without a trailing full stop.
fn words(line: &str) -> Vec<&str> {
    line.split(|c: char| !(c.is_ascii_alphanumeric() || "_-./{},".contains(c)))
        .flat_map(|w| {
            if w.contains('{') {
                vec![w]
            } else {
                w.split(',').collect()
            }
        })
        .map(|w| w.trim_end_matches('.'))
        .collect()
}

/// Whether `word` is a path citation: it has a slash, is not absolute (as
/// `/metrics` is), and starts with a top-level directory or `..`, or names
/// a file by its extension.
fn is_path(word: &str, top: &BTreeSet<String>) -> bool {
    if !word.contains('/') || word.starts_with('/') {
        return false;
    }
    let first = word.split('/').next().unwrap_or_default();
    let last = word
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    let extension = last.rsplit_once('.').map(|(_, e)| e);
    first == ".." || top.contains(first) || extension.is_some_and(|e| EXTENSIONS.contains(&e))
}

/// `a/{b,c}.rs` as `a/b.rs` and `a/c.rs`.
fn expand(word: &str) -> Vec<String> {
    let Some((head, rest)) = word.split_once('{') else {
        return vec![word.to_string()];
    };
    let Some((alternatives, tail)) = rest.split_once('}') else {
        return vec![word.to_string()];
    };
    alternatives
        .split(',')
        .flat_map(|a| expand(&format!("{head}{a}{tail}")))
        .collect()
}

/// Where a path cited in `doc` may start: the root, and the doc's own
/// directory and each directory above it, with or without their `src/`
/// (node/README.md cites `domain/apply.rs`, client/README.md
/// `tests/it/worker_sessions.rs`).
fn bases(doc: &Path) -> Vec<PathBuf> {
    doc.ancestors()
        .skip(1)
        .flat_map(|dir| [dir.to_path_buf(), dir.join("src")])
        .collect()
}

/// Every path a doc cites (`node/src/cluster/duties.rs`, `../docs/design.md`,
/// `src/cluster/leases.rs` in node/README.md) names a file or directory of
/// the repository.
#[test]
fn every_path_a_doc_cites_exists() {
    let root = root();
    let top: BTreeSet<String> = std::fs::read_dir(&root)
        .expect("workspace root")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != "target" && !name.starts_with('.'))
        .collect();
    let mut cited = 0;
    let mut problems = Vec::new();
    for doc in docs() {
        let bases = bases(&doc.path);
        for (n, line) in doc.text.lines().enumerate() {
            for word in words(line).into_iter().filter(|w| is_path(w, &top)) {
                for path in expand(word) {
                    cited += 1;
                    if !bases.iter().any(|b| root.join(b).join(&path).exists()) {
                        problems.push(format!("{}:{}: {path}", doc.path.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(cited >= 100, "only {cited} path citations found");
    assert_none(problems, "paths cited in the docs that do not exist");
}

// `cargo test` commands.

/// A `cargo test [-p PACKAGE] --test TARGET [FILTER]` in a doc.
struct Run {
    at: String,
    package: Option<String>,
    target: String,
    filter: Option<String>,
}

/// A word of a doc as a shell word: without the backticks and brackets of
/// the Markdown around it, and without a full stop or comma after it.
fn shell_word(word: &str) -> &str {
    let word = word.trim_start_matches(['`', '(']);
    let word = word.split('`').next().unwrap_or_default();
    word.trim_end_matches([')', ',', ';', '.'])
}

/// Every `cargo test ... --test TARGET` of the docs, also where a line
/// break splits the command.
fn runs() -> Vec<Run> {
    let mut runs = Vec::new();
    for doc in docs() {
        let tokens: Vec<(usize, &str)> = doc
            .text
            .lines()
            .enumerate()
            .flat_map(|(n, line)| line.split_whitespace().map(move |w| (n + 1, shell_word(w))))
            .collect();
        for (i, (line, word)) in tokens.iter().enumerate() {
            if *word != "--test" {
                continue;
            }
            // The `cargo` of this command: a few words before, at most.
            let Some(cargo) = (i.saturating_sub(8)..i)
                .rev()
                .find(|&j| tokens[j].1 == "cargo")
            else {
                continue;
            };
            let command = &tokens[cargo..i];
            let package = command
                .windows(2)
                .find(|w| w[0].1 == "-p" || w[0].1 == "--package")
                .map(|w| w[1].1.to_string());
            let Some((_, target)) = tokens.get(i + 1) else {
                continue;
            };
            let filter = tokens
                .get(i + 2)
                .map(|(_, w)| w.to_string())
                .filter(|w| !w.is_empty() && !w.starts_with('-'));
            runs.push(Run {
                at: format!("{}:{line}", doc.path.display()),
                package,
                target: target.to_string(),
                filter,
            });
        }
    }
    assert!(
        runs.len() >= 5,
        "only {} `cargo test --test` found",
        runs.len()
    );
    runs
}

/// The directory of each package of the workspace, by package name.
fn packages() -> Vec<(String, PathBuf)> {
    files(Path::new(""), &["toml"])
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|f| f == "Cargo.toml"))
        .filter_map(|manifest| {
            let text = std::fs::read_to_string(root().join(&manifest)).expect("Cargo.toml");
            let name = text
                .lines()
                .find_map(|l| l.strip_prefix("name = \""))?
                .trim_end_matches('"')
                .to_string();
            Some((name, root().join(manifest.parent()?)))
        })
        .collect()
}

/// The directories a run's package may be in: its own, or any package's
/// when the command names none.
fn package_dirs(run: &Run) -> Vec<PathBuf> {
    packages()
        .into_iter()
        .filter(|(name, _)| run.package.as_ref().is_none_or(|p| p == name))
        .map(|(_, dir)| dir)
        .collect()
}

/// Every `cargo test ... --test TARGET` in the docs names a test target of
/// its package: `tests/TARGET.rs` or `tests/TARGET/main.rs`.
#[test]
fn every_test_target_a_doc_runs_exists() {
    let mut problems = Vec::new();
    for run in runs() {
        let found = package_dirs(&run).iter().any(|dir| {
            let tests = dir.join("tests");
            tests.join(format!("{}.rs", run.target)).exists()
                || tests.join(&run.target).join("main.rs").exists()
        });
        if !found {
            let package = run.package.as_deref().unwrap_or("the workspace");
            problems.push(format!(
                "{}: `--test {}`: {package} has no such test target",
                run.at, run.target
            ));
        }
    }
    assert_none(problems, "test targets run in the docs that do not exist");
}

/// Every `--test it MODULE::` in the docs names a module of that target
/// (`tests/it/MODULE.rs` or `tests/it/MODULE/mod.rs`), and what follows
/// the `::`, if anything, begins the name of a test function in it.
#[test]
fn every_module_and_test_a_doc_selects_in_a_test_target_exists() {
    let mut selected = 0;
    let mut problems = Vec::new();
    for run in runs() {
        let Some((module, test)) = run.filter.as_deref().and_then(|f| f.split_once("::")) else {
            continue;
        };
        let sources: Vec<PathBuf> = package_dirs(&run)
            .iter()
            .map(|dir| dir.join("tests").join(&run.target))
            .flat_map(|target| {
                [
                    target.join(format!("{module}.rs")),
                    target.join(module).join("mod.rs"),
                ]
            })
            .filter(|file| file.exists())
            .collect();
        selected += 1;
        if sources.is_empty() {
            problems.push(format!(
                "{}: `--test {} {module}::`: no module {module} in that target",
                run.at, run.target
            ));
            continue;
        }
        let has_test = sources.iter().any(|file| {
            let text = std::fs::read_to_string(file).expect("test module");
            text.contains(&format!("fn {test}"))
        });
        if !test.is_empty() && !has_test {
            problems.push(format!(
                "{}: `{module}::{test}`: no test function in {module} begins with {test}",
                run.at
            ));
        }
    }
    assert!(selected >= 3, "only {selected} `--test it MODULE::` found");
    assert_none(
        problems,
        "modules and tests selected in the docs that do not exist",
    );
}

// Test names.

/// Whether `name` is named as a sentence, as this repository's tests are:
/// lower-case words joined by underscores, at least four of them.
fn is_sentence(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.split('_').filter(|w| !w.is_empty()).count() >= 4
}

/// The names the workspace's code defines: its functions, its string
/// literals (the metrics' names) and the words of its protocol.
fn defined_names() -> BTreeSet<String> {
    let identifier = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = BTreeSet::new();
    for file in files(Path::new(""), &["rs", "proto"]) {
        let text = std::fs::read_to_string(root().join(&file)).expect("source file");
        if file.extension().is_some_and(|e| e == "proto") {
            names.extend(
                text.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                    .map(String::from),
            );
            continue;
        }
        names.extend(text.split("fn ").skip(1).map(identifier));
        // Whatever stands alone between two quotes: every string literal
        // that is a name, whether or not the quotes pair up as parsed.
        names.extend(
            text.split('"')
                .filter(|s| !s.is_empty() && identifier(s).len() == s.len())
                .map(String::from),
        );
    }
    names
}

/// Every test a doc names in backticks (a name written as a sentence, such
/// as `a_follower_redirects_keepalive_streams_to_the_leader`) is a function
/// of the workspace; names of that shape that are metrics or protocol
/// fields are defined there too.
#[test]
fn every_test_a_doc_names_is_defined_in_the_code() {
    let defined = defined_names();
    let mut named = 0;
    let mut problems = Vec::new();
    for doc in docs() {
        for (n, line) in doc.text.lines().enumerate() {
            let spans = line.split('`').skip(1).step_by(2);
            for name in spans.filter(|s| is_sentence(s)) {
                named += 1;
                if !defined.contains(name) {
                    problems.push(format!("{}:{}: `{name}`", doc.path.display(), n + 1));
                }
            }
        }
    }
    assert!(named >= 50, "only {named} test names found in the docs");
    assert_none(problems, "tests named in the docs that do not exist");
}
