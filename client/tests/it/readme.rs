//! The worker in README.md is the example that `cargo test` compiles.

#[test]
fn the_readme_worker_is_the_compiled_example() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let example = std::fs::read_to_string(format!("{dir}/examples/minimal_worker.rs"))
        .expect("examples/minimal_worker.rs");
    let readme = std::fs::read_to_string(format!("{dir}/../README.md")).expect("README.md");
    let code = &example[example.find("use ").expect("code")..];
    assert!(
        readme.contains(&format!("```rust\n{code}```")),
        "README.md's worker differs from client/examples/minimal_worker.rs: copy the example's code (from the first `use`) into the README"
    );
    let lines = code.lines().count();
    assert!(lines < 40, "the README worker has grown to {lines} lines");
}
