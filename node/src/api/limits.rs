//! How large a request each service decodes, and what a client hears when
//! it sends a larger one.
//!
//! tonic refuses a message over the limit from its length prefix, before
//! reading the body, so an oversize request costs nothing; but it answers
//! OUT_OF_RANGE, the code baton uses for a compacted watch revision. Every
//! response passes through [`oversize_as_resource_exhausted`], which turns
//! that one answer into RESOURCE_EXHAUSTED with a message naming the limit.
//! (A keepalive stream that sends an oversize message mid-stream meets the
//! error inside the stream, which then ends; the session's lease then runs
//! out unless a new stream renews it.)

use axum::http::Response;
use tonic::{Code, Status};

/// Admin requests: the largest is a move of 65,536 single-partition ranges.
pub const ADMIN_REQUEST_BYTES: usize = 1 << 20;
/// Worker requests: the largest is a release of 65,536 ranges.
pub const WORKER_REQUEST_BYTES: usize = 1 << 20;
/// Tombstone requests: a check of up to 10,000 keys, 4 MiB in all.
pub const TOMBSTONES_REQUEST_BYTES: usize = 4 << 20;
/// Watch requests name a group, a worker and a revision.
pub const WATCH_REQUEST_BYTES: usize = 64 << 10;

/// The start of tonic's message for a request over the decoding limit
/// (tonic 0.14, `codec/decode.rs`).
const TONIC_OVERSIZE: &str = "Error, decoded message length too large";

/// Turns tonic's OUT_OF_RANGE for an oversize request into RESOURCE_EXHAUSTED.
pub fn oversize_as_resource_exhausted<B>(mut response: Response<B>) -> Response<B> {
    let headers = response.headers_mut();
    let Some(status) = Status::from_header_map(headers) else {
        return response;
    };
    if status.code() != Code::OutOfRange || !status.message().starts_with(TONIC_OVERSIZE) {
        return response;
    }
    let detail = status
        .message()
        .split_once(": ")
        .map_or(String::new(), |(_, d)| format!(" ({d})"));
    let exhausted = Status::resource_exhausted(format!(
        "the request is larger than this service accepts{detail}; send less per call (each service's limit is in its proto)"
    ));
    // Only fails for a message that cannot be a header, which this is not;
    // then the original answer stands.
    let _ = exhausted.add_header(headers);
    response
}
