//! The layering check: a module may import only from its own layer or the
//! layers below it, so that every arrow between modules points down; and
//! modules of one layer never import one another in a circle.
//!
//! It reads every `.rs` file under `src/`, collects each `crate::…` path
//! (in `use` declarations and in code), and maps the file and the path to a
//! layer through [`LAYERS`]. A file that reaches up, or a module missing
//! from the table, fails the test with the file and the import named.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Every module of the crate and its layer, lowest first. A module path
/// matches its longest entry (`watch::hub` before `watch`). Modules of one
/// layer may import one another, never in a circle.
const LAYERS: &[(&str, u8)] = &[
    // The replicated state and its rules: pure, knows nothing of Raft,
    // disks or the network.
    ("domain", 0),
    // The wall clock: a leaf every layer that needs wall time may use.
    ("clock", 1),
    // TLS material, peer addresses and the peer dialer: settings, no
    // behaviour of the node; the Raft transport dials with them.
    ("security", 1),
    // The hub the store publishes applied events into, the Batch it
    // publishes (also the stored history's record) and the watch metrics
    // the hub carries: below the store, which publishes into them.
    ("watch::hub", 2),
    ("watch::metrics", 2),
    // sled: the Raft log, the state machine, snapshots, backups, and the
    // openraft type configuration they are written against.
    ("store", 3),
    // openraft: tuning, transport, pre-vote, removal; drives the store.
    ("raft", 4),
    // Feeds: read the store's history, then follow the hub.
    ("watch", 4),
    // Flags, environment and file resolved into a node's configuration
    // (Raft tuning, security settings, watch buffer).
    ("config", 5),
    // Reaching the leader, the one propose path, linearizable reads, and
    // what the leader does on its own (leases, leadership, duties).
    ("cluster", 6),
    // The edges: gRPC services, the request gate that reads the membership
    // (`security::access`), health and metrics.
    ("api", 7),
    ("security::access", 7),
    ("http", 7),
    // Assembling and running a node; `lib.rs` re-exports from anywhere.
    ("node", 8),
    ("", 8),
];

/// The layer of a module path (`store::log`, `watch::hub`), by its longest
/// entry in [`LAYERS`].
fn layer_of(module: &str) -> Option<(&'static str, u8)> {
    LAYERS
        .iter()
        .filter(|(name, _)| {
            name.is_empty()
                || module == *name
                || module
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with("::"))
        })
        .max_by_key(|(name, _)| name.len())
        .copied()
}

/// The module a file under `src/` is: `store/mod.rs` is `store`,
/// `watch/hub.rs` is `watch::hub`, `lib.rs` is the root (`""`).
fn module_of(file: &Path) -> String {
    let mut parts: Vec<String> = file
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if stem != "mod" && stem != "lib" {
            parts.push(stem.to_string());
        }
    }
    parts.join("::")
}

/// Every `crate::` path in `source`, without the `crate::`, braces of a
/// `use` tree expanded (`crate::watch::{hub::Batch, Feed}` gives
/// `watch::hub::Batch` and `watch::Feed`). Comments are skipped.
fn crate_paths(source: &str) -> Vec<String> {
    let code: String = source
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let bytes = code.as_bytes();
    let mut paths = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("crate::") {
        let start = from + at;
        from = start + "crate::".len();
        let preceded_by_ident = start > 0 && {
            let c = bytes[start - 1];
            c.is_ascii_alphanumeric() || c == b'_'
        };
        if !preceded_by_ident {
            let mut rest = &code[from..];
            use_tree("", &mut rest, &mut paths);
        }
    }
    paths
}

/// Parses one `use` tree (`a::b`, `a::{b, c::d}`, `{a, b}`) at the start of
/// `rest`, adding each full path after `prefix` to `paths`.
fn use_tree(prefix: &str, rest: &mut &str, paths: &mut Vec<String>) {
    let mut path = prefix.to_string();
    loop {
        *rest = rest.trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            *rest = group;
            loop {
                *rest = rest.trim_start();
                if let Some(after) = rest.strip_prefix('}') {
                    *rest = after;
                    return;
                }
                if let Some(after) = rest.strip_prefix(',') {
                    *rest = after;
                    continue;
                }
                let before = rest.len();
                use_tree(&path, rest, paths);
                if rest.len() == before {
                    // Not a use tree after all: stop rather than loop.
                    return;
                }
            }
        }
        let ident_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if ident_len == 0 {
            break;
        }
        let ident = &rest[..ident_len];
        *rest = &rest[ident_len..];
        if ident != "self" {
            if !path.is_empty() {
                path.push_str("::");
            }
            path.push_str(ident);
        }
        match rest.strip_prefix("::") {
            Some(after) => *rest = after,
            None => break,
        }
    }
    if !path.is_empty() {
        paths.push(path);
    }
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, found)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    Ok(())
}

/// One `crate::` path named in a file under `src/`.
struct Import {
    /// The file, relative to `src/`.
    file: String,
    /// The module the file is (`store::log`).
    module: String,
    /// The path it names, without `crate::`.
    target: String,
}

/// Every `crate::` path of every file under `src/`, except the binary's
/// (it uses the library by its name) and this file's (full of examples).
fn imports() -> std::io::Result<Vec<Import>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files)?;
    files.sort();
    let mut found = Vec::new();
    for path in &files {
        let file = path.strip_prefix(&src).unwrap_or(path);
        if file == Path::new("main.rs") || file == Path::new("layering.rs") {
            continue;
        }
        let source = std::fs::read_to_string(path)?;
        for target in crate_paths(&source) {
            found.push(Import {
                file: file.to_string_lossy().into_owned(),
                module: module_of(file),
                target,
            });
        }
    }
    Ok(found)
}

/// The entry of [`LAYERS`] a module path falls under; the root (`""`)
/// only for the root itself.
fn entry_of(module: &str) -> Option<(&'static str, u8)> {
    layer_of(module).filter(|(name, _)| !name.is_empty() || module.is_empty())
}

#[test]
fn modules_import_only_from_their_own_layer_or_below() -> std::io::Result<()> {
    let mut problems = BTreeSet::new();
    for Import {
        file,
        module,
        target,
    } in imports()?
    {
        let Some((_, rank)) = entry_of(&module) else {
            problems.insert(format!(
                "{file}: module `{module}` is not in the layering table (LAYERS in layering.rs)"
            ));
            continue;
        };
        let Some((layer, target_rank)) = layer_of(&target).filter(|(name, _)| !name.is_empty())
        else {
            problems.insert(format!("{file}: imports `crate::{target}`, which is not in the layering table (LAYERS in layering.rs)"));
            continue;
        };
        if target_rank > rank {
            problems.insert(format!(
                "{file} (`{module}`, layer {rank}) imports from `{layer}` (layer {target_rank}), a higher layer: `crate::{target}`"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "layering violations:\n{}",
        problems.into_iter().collect::<Vec<_>>().join("\n")
    );
    Ok(())
}

/// Imports across layers only point down, so a cycle could only form
/// among the entries of one layer: there must be none either.
#[test]
fn no_two_modules_of_one_layer_import_each_other_even_through_others() -> std::io::Result<()> {
    let mut edges: BTreeSet<(&str, &str)> = BTreeSet::new();
    for Import { module, target, .. } in imports()? {
        if let (Some((from, a)), Some((to, b))) = (entry_of(&module), layer_of(&target)) {
            if a == b && from != to && !to.is_empty() {
                edges.insert((from, to));
            }
        }
    }
    // Every entry that can reach itself again lies on a cycle.
    let reaches = |start: &str| -> BTreeSet<&str> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start];
        while let Some(at) = todo.pop() {
            for &(_, to) in edges.iter().filter(|(from, _)| *from == at) {
                if seen.insert(to) {
                    todo.push(to);
                }
            }
        }
        seen
    };
    let on_cycles: Vec<&str> = LAYERS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| reaches(name).contains(name))
        .collect();
    assert!(
        on_cycles.is_empty(),
        "modules that import each other (directly or through others of their layer): {on_cycles:?}; same-layer imports: {edges:?}"
    );
    Ok(())
}

#[test]
fn use_trees_expand_to_full_paths() {
    let paths = crate_paths(
        "use crate::watch::{hub::{Batch, Hub}, Feed};\n\
         // use crate::api::not_this;\n\
         let x = $crate::api::leader::Route::Local;\n\
         use crate::domain::{self, quoted};\n\
         baton_crate::ignored",
    );
    assert_eq!(
        paths,
        [
            "watch::hub::Batch",
            "watch::hub::Hub",
            "watch::Feed",
            "api::leader::Route::Local",
            "domain",
            "domain::quoted",
        ]
    );
    assert_eq!(
        layer_of("watch::hub::Batch").map(|l| l.0),
        Some("watch::hub")
    );
    assert_eq!(layer_of("watch::Feed").map(|l| l.0), Some("watch"));
    assert_eq!(layer_of("watcher").map(|l| l.0), Some(""));
    assert_eq!(module_of(Path::new("store/mod.rs")), "store");
    assert_eq!(module_of(Path::new("watch/hub.rs")), "watch::hub");
    assert_eq!(module_of(Path::new("lib.rs")), "");
}
