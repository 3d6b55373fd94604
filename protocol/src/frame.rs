//! Length-prefixed framing: a 4-byte big-endian length, then that many bytes of JSON.
//!
//! The decoder refuses a frame whose announced length exceeds its bound *before* buffering it,
//! so a peer cannot make the process allocate more than the bound per connection. Until a peer
//! is admitted (pinned, paired or accepted) the bound is [`PRE_AUTH_MAX_FRAME_LEN`]; only an
//! admitted peer may send frames up to [`MAX_FRAME_LEN`]. Every decoded message also passes
//! [`Message::check`], so a `Hello` with a junk name or version is an error here, not a value
//! someone might store.

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::{Error, Message};

/// Largest frame accepted or sent once the peer is admitted (1 MiB).
pub const MAX_FRAME_LEN: usize = 1024 * 1024;
/// Largest frame accepted or sent before the peer is admitted (4 KiB): a `Hello`, a
/// `PairRequest` or an answer to them, with room to spare.
pub const PRE_AUTH_MAX_FRAME_LEN: usize = 4 * 1024;
const HEADER_LEN: usize = 4;

/// Encodes and decodes [`Message`]s as bounded frames.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_len: usize,
}

impl FrameCodec {
    /// A codec with a custom bound.
    pub fn with_max_len(max_len: usize) -> Self {
        Self { max_len }
    }

    /// The bound this codec enforces.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Changes the bound, e.g. from the pre-authentication one to the full one.
    pub fn set_max_len(&mut self, max_len: usize) {
        self.max_len = max_len;
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::with_max_len(MAX_FRAME_LEN)
    }
}

impl Decoder for FrameCodec {
    type Item = Message;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, Error> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max_len {
            return Err(Error::FrameTooLarge {
                len,
                max: self.max_len,
            });
        }
        if src.len() < HEADER_LEN + len {
            src.reserve(HEADER_LEN + len - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let body = src.split_to(len);
        let message: Message = serde_json::from_slice(&body)?;
        message.check()?;
        Ok(Some(message))
    }
}

impl Encoder<Message> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, item: Message, dst: &mut BytesMut) -> Result<(), Error> {
        item.check()?;
        let body = serde_json::to_vec(&item)?;
        if body.len() > self.max_len {
            return Err(Error::FrameTooLarge {
                len: body.len(),
                max: self.max_len,
            });
        }
        dst.reserve(HEADER_LEN + body.len());
        dst.put_u32(body.len() as u32);
        dst.extend_from_slice(&body);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{Finding, Role};
    use proptest::prelude::*;

    fn encode(m: &Message) -> BytesMut {
        let mut buf = BytesMut::new();
        FrameCodec::default().encode(m.clone(), &mut buf).unwrap();
        buf
    }

    #[test]
    fn round_trips_a_message() {
        let m = Message::Ping { seq: 7 };
        let mut buf = encode(&m);
        assert_eq!(FrameCodec::default().decode(&mut buf).unwrap(), Some(m));
        assert!(buf.is_empty());
    }

    #[test]
    fn refuses_an_oversized_header_before_buffering() {
        let mut buf = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]);
        let err = FrameCodec::default().decode(&mut buf).unwrap_err();
        assert!(
            matches!(err, Error::FrameTooLarge { len, max } if len == 0x7fff_ffff && max == MAX_FRAME_LEN)
        );
    }

    #[test]
    fn refuses_a_malformed_body() {
        let mut buf = BytesMut::new();
        buf.put_u32(5);
        buf.extend_from_slice(b"hello");
        assert!(matches!(
            FrameCodec::default().decode(&mut buf),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn refuses_to_send_an_oversized_frame() {
        let mut codec = FrameCodec::with_max_len(16);
        let mut buf = BytesMut::new();
        let m = Message::Hello {
            role: Role::Console,
            product_version: "0.1.0".into(),
            name: "a-rather-long-console-name".into(),
        };
        assert!(matches!(
            codec.encode(m, &mut buf),
            Err(Error::FrameTooLarge { .. })
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn before_admission_a_frame_above_a_few_kib_is_refused_before_buffering() {
        let mut codec = FrameCodec::with_max_len(PRE_AUTH_MAX_FRAME_LEN);
        let mut buf = BytesMut::new();
        buf.put_u32((PRE_AUTH_MAX_FRAME_LEN + 1) as u32);
        buf.extend_from_slice(b"{\"type\":\"hello\"");
        assert!(matches!(
            codec.decode(&mut buf),
            Err(Error::FrameTooLarge { max, .. }) if max == PRE_AUTH_MAX_FRAME_LEN
        ));
        assert!(buf.capacity() < 2 * PRE_AUTH_MAX_FRAME_LEN);
        // After admission the same frame would be waited for.
        codec.set_max_len(MAX_FRAME_LEN);
        assert!(codec.decode(&mut buf).unwrap().is_none());
    }

    #[test]
    fn a_hello_with_a_junk_version_does_not_decode() {
        let body = format!(
            r#"{{"type":"hello","role":"engine","product_version":"{}","name":"e1"}}"#,
            "9".repeat(3000)
        );
        let mut buf = BytesMut::new();
        buf.put_u32(body.len() as u32);
        buf.extend_from_slice(body.as_bytes());
        let err = FrameCodec::with_max_len(PRE_AUTH_MAX_FRAME_LEN)
            .decode(&mut buf)
            .unwrap_err();
        assert!(matches!(err, Error::InvalidText { .. }), "{err}");
    }

    #[test]
    fn a_parser_error_quoting_the_peer_is_cut() {
        let body = format!(r#"{{"type":"{}"}}"#, "z".repeat(3000));
        let mut buf = BytesMut::new();
        buf.put_u32(body.len() as u32);
        buf.extend_from_slice(body.as_bytes());
        let err = FrameCodec::default().decode(&mut buf).unwrap_err();
        assert!(matches!(err, Error::Malformed(_)));
        assert!(err.to_string().len() < 300, "{err}");
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            any::<u64>().prop_map(|seq| Message::Ping { seq }),
            any::<u64>().prop_map(|seq| Message::Pong { seq }),
            ("[0-9a-z.+-]{1,40}", "[0-9A-Za-z._-]{1,40}").prop_map(|(v, n)| Message::Hello {
                role: Role::Engine,
                product_version: v,
                name: n
            }),
            (
                any::<u64>(),
                ".{0,40}",
                any::<u16>(),
                proptest::option::of(".{0,200}")
            )
                .prop_map(|(scan_id, address, port, banner)| Message::ScanFinding {
                    scan_id,
                    finding: Finding {
                        address,
                        host_name: None,
                        port,
                        banner
                    }
                }),
            Just(Message::Accepted),
            Just(Message::PendingAuthorization),
        ]
    }

    proptest! {
        /// Any sequence of messages, cut into arbitrary chunks, decodes to the same sequence.
        #[test]
        fn decodes_any_chunking(msgs in proptest::collection::vec(arb_message(), 1..8), cuts in proptest::collection::vec(1usize..64, 1..32)) {
            let mut wire = BytesMut::new();
            for m in &msgs { wire.extend_from_slice(&encode(m)); }
            let mut codec = FrameCodec::default();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            let mut rest = &wire[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                i += 1;
                while let Some(m) = codec.decode(&mut buf).unwrap() { out.push(m); }
            }
            prop_assert_eq!(out, msgs);
            prop_assert!(buf.is_empty());
        }

        /// Arbitrary bytes never panic the decoder, and never make it buffer past the bound.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut codec = FrameCodec::with_max_len(1024);
            let mut buf = BytesMut::from(&bytes[..]);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(_)) => continue,
                    Ok(None) => { prop_assert!(buf.len() < 4 + 1024); break }
                    Err(_) => break,
                }
            }
        }
    }
}
