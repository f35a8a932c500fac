//! baton's gRPC protocol: the `.proto` files under `baton/v1/` and the tonic/prost
//! code generated from them at build time (with protox, no system `protoc`).
//!
//! This crate depends on no other baton crate; the node and the client both use it.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("baton.v1");
}
