//! The session framing on arbitrary bytes: never panics, never buffers past the bound, and
//! whatever decodes re-encodes.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use scan_engine_protocol::frame::FrameCodec;
use tokio_util::codec::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    // A small bound so that "too large" paths are reached with small inputs.
    for max in [64usize, 1024 * 1024] {
        let mut codec = FrameCodec::with_max_len(max);
        let mut buf = BytesMut::from(data);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(message)) => {
                    let mut out = BytesMut::new();
                    let _ = codec.encode(message, &mut out);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let _ = codec.decode_eof(&mut buf);
    }
});
