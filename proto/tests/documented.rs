//! The protos are the contract (issue 24): a client in another language is
//! written from them alone, so every service, RPC, message, enum, field,
//! oneof and enum value carries a comment, on the lines above it or at the
//! end of its line.

use std::path::Path;

/// What a line declares, if it declares anything that needs a comment.
fn declares(line: &str) -> Option<&str> {
    let code = line.split("//").next().unwrap_or_default().trim();
    let keyword = code.split_whitespace().next()?;
    if ["service", "rpc", "message", "enum", "oneof"].contains(&keyword) {
        return Some(code);
    }
    // A field (`type name = N;`, `optional`/`repeated`/`map<..>` included)
    // or an enum value (`NAME = N;`).
    let (head, tail) = code.split_once('=')?;
    let numbered = tail
        .trim()
        .trim_end_matches(';')
        .trim()
        .parse::<u32>()
        .is_ok();
    (numbered && !head.trim().is_empty() && keyword != "option").then_some(code)
}

#[test]
fn every_declaration_in_the_protos_has_a_comment() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("baton/v1");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("proto directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "proto"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "protos not found in {}", dir.display());
    let mut missing = Vec::new();
    let mut seen = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read proto");
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let Some(code) = declares(line) else { continue };
            seen += 1;
            let trailing = line.contains("//");
            let above = n > 0 && lines[n - 1].trim_start().starts_with("//");
            if !trailing && !above {
                let name = file.file_name().unwrap_or_default().to_string_lossy();
                missing.push(format!("{name}:{}: {code}", n + 1));
            }
        }
    }
    assert!(
        seen > 200,
        "only {seen} declarations found: is the parser right?"
    );
    assert!(
        missing.is_empty(),
        "{} declarations without a comment:\n{}",
        missing.len(),
        missing.join("\n")
    );
}
