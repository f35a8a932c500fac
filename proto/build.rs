//! Compiles the .proto files with protox (pure Rust), so building baton needs no
//! system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "baton/v1/raft.proto",
        "baton/v1/types.proto",
        "baton/v1/admin.proto",
        "baton/v1/tombstones.proto",
        "baton/v1/worker.proto",
        "baton/v1/watch.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["."])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
