//! The SPDY/3.1 framer of `kubectl port-forward`: bytes from the client,
//! pushed in chunks of a size the input chooses (as the transport delivers
//! them), parsed into frames until an error ends the connection. Every frame
//! parsed must encode again and parse back to itself (header names are
//! lowercased on the wire), through one encoder and one decoder, since the
//! header compression state spans the connection.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use wasmkube_apiserver::portforward::spdy::{Decoder, Encoder, Frame};

/// Enough frames for any interleaving worth trying; bounds the time one
/// input takes.
const MAX_FRAMES: usize = 256;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut decoder = Decoder::new();
    let mut frames = Vec::new();
    'read: for piece in bytes.chunks(chunk) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(f)) => {
                    frames.push(f);
                    if frames.len() >= MAX_FRAMES {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(_) => break 'read,
            }
        }
    }

    let mut encoder = Encoder::new();
    let mut again = Decoder::new();
    for f in frames {
        let mut out = BytesMut::new();
        if let Err(e) = encoder.encode(&f, &mut out) {
            panic!("a parsed frame does not encode: {f:?}: {e}");
        }
        again.push(&out);
        let back = match again.next_frame() {
            Ok(Some(back)) => back,
            other => panic!("{f:?} encoded as {out:?} parses as {other:?}"),
        };
        assert_eq!(
            back,
            lowercase(f),
            "a frame changed through encode and parse"
        );
        assert_eq!(again.buffered(), 0, "encoding left bytes over");
    }
});

/// `f` as it reads back after encoding: header names lowercase.
fn lowercase(f: Frame) -> Frame {
    let lower = |h: Vec<(String, String)>| {
        h.into_iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v))
            .collect()
    };
    match f {
        Frame::SynStream {
            stream_id,
            associated_to,
            priority,
            fin,
            unidirectional,
            headers,
        } => Frame::SynStream {
            stream_id,
            associated_to,
            priority,
            fin,
            unidirectional,
            headers: lower(headers),
        },
        Frame::SynReply {
            stream_id,
            fin,
            headers,
        } => Frame::SynReply {
            stream_id,
            fin,
            headers: lower(headers),
        },
        Frame::Headers {
            stream_id,
            fin,
            headers,
        } => Frame::Headers {
            stream_id,
            fin,
            headers: lower(headers),
        },
        other => other,
    }
}
