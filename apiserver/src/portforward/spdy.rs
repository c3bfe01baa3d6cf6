//! A SPDY/3.1 framer: the subset of the protocol that Kubernetes'
//! streaming (moby/spdystream, used by kubectl's port-forward) speaks.
//!
//! Frames are parsed from a byte buffer fed by the transport
//! ([`Decoder::push`], [`Decoder::next_frame`]) and written with
//! [`Encoder::encode`]. Name/value header blocks are zlib-compressed with
//! the SPDY/3 preset dictionary, one compression context per direction
//! for the whole connection (each block ends at a sync flush), so a
//! [`Decoder`] and an [`Encoder`] each live as long as their connection.
//!
//! Every length and count comes from the peer: they are checked before
//! use, and a malformed frame is a [`FrameError`], never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;
/// DATA and SYN_* flag: the sender's last frame on this stream.
pub const FLAG_FIN: u8 = 0x01;
/// SYN_STREAM flag: the receiver may not send on this stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// RST_STREAM status codes (SPDY/3 section 2.4.2).
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const STREAM_IN_USE: u32 = 8;
}

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// The frame header: 8 bytes for control and data frames alike.
const HEADER_LEN: usize = 8;
/// The largest decompressed header block accepted: port-forward headers are
/// a few dozen bytes, so this only bounds what a hostile peer can make us
/// allocate (zlib expands up to ~1000x).
pub const MAX_HEADER_BLOCK: usize = 256 << 10;
/// The largest control frame accepted (data frames may use the full 24 bits).
pub const MAX_CONTROL_FRAME: usize = 1 << 20;
/// The largest number of SETTINGS entries accepted.
const MAX_SETTINGS: usize = 64;

/// Why bytes from the peer are not a valid SPDY/3.1 frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("unsupported SPDY version {0} (only 3 is spoken)")]
    Version(u16),
    #[error("{kind} frame of {len} bytes is malformed")]
    Length { kind: &'static str, len: usize },
    #[error("control frame of {0} bytes is larger than the {MAX_CONTROL_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("stream id 0 is not valid on a {0} frame")]
    ZeroStream(&'static str),
    #[error("header block: {0}")]
    HeaderBlock(String),
    #[error("header block decompresses to more than {MAX_HEADER_BLOCK} bytes")]
    HeaderBlockTooLarge,
    #[error("header compression failed: {0}")]
    Compress(String),
    #[error("frame payload of {0} bytes does not fit SPDY's 24-bit length")]
    PayloadTooLarge(usize),
}

/// A header block: names (lowercase on the wire) and values; several values
/// of one name are joined by NUL, as the protocol says.
pub type Headers = Vec<(String, String)>;

/// One SPDY/3.1 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        /// (flags, id, value) of each entry.
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    /// A control frame type this framer does not know; SPDY says ignore it.
    Unknown {
        frame_type: u16,
    },
}

impl Frame {
    /// The value of header `name` (ASCII case-insensitive), if present.
    pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The SPDY/3 zlib dictionary (draft 3, section 2.6.10.1): length-prefixed
/// header names and values, then a run of common status and value text.
pub fn dictionary() -> &'static [u8] {
    static DICT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
            "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
            "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
            "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
            "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
            "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
            "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8",
            "charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut d = Vec::with_capacity(1423);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

/// Parses frames from the bytes of one connection.
pub struct Decoder {
    buf: BytesMut,
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self {
            buf: BytesMut::new(),
            inflate: Decompress::new(true),
        }
    }

    /// Appends bytes read from the transport.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet part of a whole frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame, `None` until enough bytes were pushed. After
    /// an error the connection's header compression state is unknown, so
    /// the caller must give the connection up.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let h = &self.buf[..HEADER_LEN];
        let control = h[0] & 0x80 != 0;
        let flags = h[4];
        let len = (usize::from(h[5]) << 16) | (usize::from(h[6]) << 8) | usize::from(h[7]);
        if control {
            let version = u16::from_be_bytes([h[0], h[1]]) & 0x7fff;
            if version != VERSION {
                return Err(FrameError::Version(version));
            }
            if len > MAX_CONTROL_FRAME {
                return Err(FrameError::TooLarge(len));
            }
        }
        if self.buf.len() < HEADER_LEN + len {
            // Reserve for the rest of the frame now rather than by doublings.
            self.buf.reserve(HEADER_LEN + len - self.buf.len());
            return Ok(None);
        }
        let mut frame = self.buf.split_to(HEADER_LEN + len).freeze();
        let word0 = frame.get_u32();
        frame.advance(4);
        if !control {
            let stream_id = word0 & 0x7fff_ffff;
            if stream_id == 0 {
                return Err(FrameError::ZeroStream("DATA"));
            }
            return Ok(Some(Frame::Data {
                stream_id,
                fin: flags & FLAG_FIN != 0,
                data: frame,
            }));
        }
        let frame_type = (word0 & 0xffff) as u16;
        self.control(frame_type, flags, frame).map(Some)
    }

    fn control(&mut self, ty: u16, flags: u8, mut p: Bytes) -> Result<Frame, FrameError> {
        let len = p.len();
        let fin = flags & FLAG_FIN != 0;
        let need = |kind: &'static str, min: usize| {
            if len < min {
                Err(FrameError::Length { kind, len })
            } else {
                Ok(())
            }
        };
        let exact = |kind: &'static str, want: usize| {
            if len != want {
                Err(FrameError::Length { kind, len })
            } else {
                Ok(())
            }
        };
        Ok(match ty {
            SYN_STREAM => {
                need("SYN_STREAM", 10)?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let associated_to = p.get_u32() & 0x7fff_ffff;
                let priority = p.get_u8() >> 5;
                let _slot = p.get_u8();
                if stream_id == 0 {
                    return Err(FrameError::ZeroStream("SYN_STREAM"));
                }
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers: self.headers(&p)?,
                }
            }
            SYN_REPLY | HEADERS => {
                let kind = if ty == SYN_REPLY {
                    "SYN_REPLY"
                } else {
                    "HEADERS"
                };
                need(kind, 4)?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                if stream_id == 0 {
                    return Err(FrameError::ZeroStream(kind));
                }
                let headers = self.headers(&p)?;
                if ty == SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        fin,
                        headers,
                    }
                }
            }
            RST_STREAM => {
                exact("RST_STREAM", 8)?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                if stream_id == 0 {
                    return Err(FrameError::ZeroStream("RST_STREAM"));
                }
                Frame::RstStream {
                    stream_id,
                    status: p.get_u32(),
                }
            }
            SETTINGS => {
                need("SETTINGS", 4)?;
                let n = p.get_u32() as usize;
                if n > MAX_SETTINGS || p.len() != n * 8 {
                    return Err(FrameError::Length {
                        kind: "SETTINGS",
                        len,
                    });
                }
                let entries = (0..n)
                    .map(|_| {
                        let w = p.get_u32();
                        ((w >> 24) as u8, w & 0x00ff_ffff, p.get_u32())
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            PING => {
                exact("PING", 4)?;
                Frame::Ping { id: p.get_u32() }
            }
            GOAWAY => {
                exact("GOAWAY", 8)?;
                Frame::GoAway {
                    last_good_stream_id: p.get_u32() & 0x7fff_ffff,
                    status: p.get_u32(),
                }
            }
            WINDOW_UPDATE => {
                exact("WINDOW_UPDATE", 8)?;
                Frame::WindowUpdate {
                    stream_id: p.get_u32() & 0x7fff_ffff,
                    delta: p.get_u32() & 0x7fff_ffff,
                }
            }
            frame_type => Frame::Unknown { frame_type },
        })
    }

    /// Inflates one compressed header block and parses its pairs.
    fn headers(&mut self, compressed: &[u8]) -> Result<Headers, FrameError> {
        let mut plain = Vec::with_capacity(compressed.len() * 4 + 64);
        let mut input = compressed;
        loop {
            if plain.len() >= MAX_HEADER_BLOCK {
                return Err(FrameError::HeaderBlockTooLarge);
            }
            plain.reserve((MAX_HEADER_BLOCK - plain.len()).min(4096));
            let before_in = self.inflate.total_in();
            let before_out = self.inflate.total_out();
            let result = self
                .inflate
                .decompress_vec(input, &mut plain, FlushDecompress::Sync);
            let used = usize::try_from(self.inflate.total_in() - before_in).unwrap_or(input.len());
            input = input.get(used..).unwrap_or_default();
            let produced = self.inflate.total_out() - before_out;
            match result {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    // Done when the input is used up and the spare room was
                    // not filled (nothing more is pending inside zlib).
                    if input.is_empty() && plain.len() < plain.capacity() {
                        break;
                    }
                    if used == 0 && produced == 0 && plain.len() < plain.capacity() {
                        return Err(FrameError::HeaderBlock("truncated zlib data".into()));
                    }
                }
                Err(e) => match e.needs_dictionary() {
                    Some(_) => {
                        self.inflate
                            .set_dictionary(dictionary())
                            .map_err(|e| FrameError::HeaderBlock(format!("dictionary: {e}")))?;
                    }
                    None => return Err(FrameError::HeaderBlock(e.to_string())),
                },
            }
        }
        if plain.len() > MAX_HEADER_BLOCK {
            return Err(FrameError::HeaderBlockTooLarge);
        }
        parse_pairs(&plain)
    }
}

fn parse_pairs(mut b: &[u8]) -> Result<Headers, FrameError> {
    let bad = |why: &str| FrameError::HeaderBlock(why.to_string());
    if b.len() < 4 {
        return Err(bad("missing pair count"));
    }
    let n = b.get_u32() as usize;
    // Each pair takes at least 8 bytes: a count beyond that is a lie.
    if n > b.len() / 8 {
        return Err(bad("pair count exceeds the block"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let name = take_string(&mut b).ok_or_else(|| bad("truncated name"))?;
        if name.is_empty() {
            return Err(bad("empty header name"));
        }
        let value = take_string(&mut b).ok_or_else(|| bad("truncated value"))?;
        out.push((name, value));
    }
    if !b.is_empty() {
        return Err(bad("trailing bytes after the last pair"));
    }
    Ok(out)
}

fn take_string(b: &mut &[u8]) -> Option<String> {
    if b.len() < 4 {
        return None;
    }
    let n = b.get_u32() as usize;
    if n > b.len() {
        return None;
    }
    let (s, rest) = b.split_at(n);
    *b = rest;
    String::from_utf8(s.to_vec()).ok()
}

/// Writes frames for one connection.
pub struct Encoder {
    deflate: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        Self {
            deflate: Compress::new(Compression::default(), true),
        }
    }

    /// Appends `frame`'s bytes to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), FrameError> {
        match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                let len = u24(data.len())?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32((u32::from(flag(*fin)) << 24) | len);
                out.extend_from_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                fin,
                unidirectional,
                headers,
            } => {
                let block = self.block(headers)?;
                let mut p = BytesMut::with_capacity(10 + block.len());
                p.put_u32(stream_id & 0x7fff_ffff);
                p.put_u32(associated_to & 0x7fff_ffff);
                p.put_u8((priority & 0x07) << 5);
                p.put_u8(0);
                p.extend_from_slice(&block);
                let flags = flag(*fin)
                    | if *unidirectional {
                        FLAG_UNIDIRECTIONAL
                    } else {
                        0
                    };
                control(out, SYN_STREAM, flags, &p)?;
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            }
            | Frame::Headers {
                stream_id,
                fin,
                headers,
            } => {
                let ty = if matches!(frame, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                let block = self.block(headers)?;
                let mut p = BytesMut::with_capacity(4 + block.len());
                p.put_u32(stream_id & 0x7fff_ffff);
                p.extend_from_slice(&block);
                control(out, ty, flag(*fin), &p)?;
            }
            Frame::RstStream { stream_id, status } => {
                let mut p = [0u8; 8];
                p[..4].copy_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                p[4..].copy_from_slice(&status.to_be_bytes());
                control(out, RST_STREAM, 0, &p)?;
            }
            Frame::Settings { flags, entries } => {
                let mut p = BytesMut::with_capacity(4 + entries.len() * 8);
                p.put_u32(entries.len() as u32);
                for (f, id, value) in entries {
                    p.put_u32((u32::from(*f) << 24) | (id & 0x00ff_ffff));
                    p.put_u32(*value);
                }
                control(out, SETTINGS, *flags, &p)?;
            }
            Frame::Ping { id } => control(out, PING, 0, &id.to_be_bytes())?,
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                let mut p = [0u8; 8];
                p[..4].copy_from_slice(&(last_good_stream_id & 0x7fff_ffff).to_be_bytes());
                p[4..].copy_from_slice(&status.to_be_bytes());
                control(out, GOAWAY, 0, &p)?;
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut p = [0u8; 8];
                p[..4].copy_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                p[4..].copy_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
                control(out, WINDOW_UPDATE, 0, &p)?;
            }
            Frame::Unknown { frame_type } => control(out, *frame_type, 0, &[])?,
        }
        Ok(())
    }

    /// Compresses a header block, ending at a sync flush so the peer can
    /// decode it without the blocks that follow.
    fn block(&mut self, headers: &Headers) -> Result<Vec<u8>, FrameError> {
        let mut plain = Vec::new();
        plain.put_u32(headers.len() as u32);
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            plain.put_u32(name.len() as u32);
            plain.extend_from_slice(name.as_bytes());
            plain.put_u32(value.len() as u32);
            plain.extend_from_slice(value.as_bytes());
        }
        if self.deflate.total_in() == 0 && self.deflate.total_out() == 0 {
            self.deflate
                .set_dictionary(dictionary())
                .map_err(|e| FrameError::Compress(e.to_string()))?;
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut input = plain.as_slice();
        loop {
            out.reserve(input.len() + 64);
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| FrameError::Compress(e.to_string()))?;
            let used = usize::try_from(self.deflate.total_in() - before).unwrap_or(input.len());
            input = input.get(used..).unwrap_or_default();
            // With room to spare after consuming everything, the flush is complete.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        Ok(out)
    }
}

fn flag(fin: bool) -> u8 {
    if fin { FLAG_FIN } else { 0 }
}

fn u24(len: usize) -> Result<u32, FrameError> {
    if len > 0x00ff_ffff {
        return Err(FrameError::PayloadTooLarge(len));
    }
    Ok(len as u32)
}

fn control(out: &mut BytesMut, ty: u16, flags: u8, payload: &[u8]) -> Result<(), FrameError> {
    let len = u24(payload.len())?;
    out.put_u16(0x8000 | VERSION);
    out.put_u16(ty);
    out.put_u32((u32::from(flags) << 24) | len);
    out.extend_from_slice(payload);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers: h(&[
                    ("streamtype", "error"),
                    ("port", "8080"),
                    ("requestid", "0"),
                ]),
            },
            Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: vec![],
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 7,
                fin: true,
                unidirectional: true,
                headers: h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::Data {
                stream_id: 3,
                fin: false,
                data: Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"),
            },
            Frame::Data {
                stream_id: 3,
                fin: true,
                data: Bytes::new(),
            },
            Frame::RstStream {
                stream_id: 5,
                status: rst::CANCEL,
            },
            Frame::Settings {
                flags: 1,
                entries: vec![(0, 7, 65536), (1, 4, 100)],
            },
            Frame::Ping { id: 1 },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: 0,
            },
            Frame::Headers {
                stream_id: 3,
                fin: false,
                headers: h(&[("a", "b\0c")]),
            },
            Frame::WindowUpdate {
                stream_id: 3,
                delta: 1 << 20,
            },
        ]
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // Adler-32 of the SPDY/3 dictionary, the DICTID peers announce.
        let mut c = Compress::new(Compression::default(), true);
        assert_eq!(c.set_dictionary(d).ok(), Some(0xe3c6_a7c2));
    }

    #[test]
    fn frames_round_trip_over_one_compression_context() -> Result<(), FrameError> {
        let mut enc = Encoder::new();
        let mut wire = BytesMut::new();
        let frames = all_frames();
        for f in &frames {
            enc.encode(f, &mut wire)?;
        }
        let mut dec = Decoder::new();
        let mut got = Vec::new();
        // Fed one byte at a time: frames must be reassembled across reads.
        for b in wire.iter() {
            dec.push(&[*b]);
            while let Some(f) = dec.next_frame()? {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
        assert_eq!(dec.buffered(), 0);
        Ok(())
    }

    #[test]
    fn header_names_go_out_lowercase() -> Result<(), FrameError> {
        let mut enc = Encoder::new();
        let mut wire = BytesMut::new();
        enc.encode(
            &Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: h(&[("StreamType", "data")]),
            },
            &mut wire,
        )?;
        let mut dec = Decoder::new();
        dec.push(&wire);
        let Some(Frame::SynReply { headers, .. }) = dec.next_frame()? else {
            panic!("not a SYN_REPLY");
        };
        assert_eq!(Frame::header(&headers, "streamtype"), Some("data"));
        assert_eq!(headers[0].0, "streamtype");
        Ok(())
    }

    #[test]
    fn malformed_frames_are_errors() {
        let check = |bytes: &[u8]| {
            let mut dec = Decoder::new();
            dec.push(bytes);
            dec.next_frame()
        };
        // Wrong version.
        assert_eq!(
            check(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]),
            Err(FrameError::Version(2))
        );
        // PING with a 3-byte payload.
        assert!(matches!(
            check(&[0x80, 3, 0, 6, 0, 0, 0, 3, 0, 0, 1]),
            Err(FrameError::Length { kind: "PING", .. })
        ));
        // DATA on stream 0.
        assert_eq!(
            check(&[0, 0, 0, 0, 0, 0, 0, 1, b'x']),
            Err(FrameError::ZeroStream("DATA"))
        );
        // A control frame over the limit is refused before it is buffered.
        assert_eq!(
            check(&[0x80, 3, 0, 1, 0, 0xff, 0xff, 0xff]),
            Err(FrameError::TooLarge(0x00ff_ffff))
        );
        // SYN_STREAM whose header block is not zlib.
        assert!(matches!(
            check(&[
                0x80, 3, 0, 1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4
            ]),
            Err(FrameError::HeaderBlock(_))
        ));
        // SETTINGS whose count does not match its length.
        assert!(matches!(
            check(&[0x80, 3, 0, 4, 0, 0, 0, 4, 0, 0, 0, 9]),
            Err(FrameError::Length {
                kind: "SETTINGS",
                ..
            })
        ));
        // Incomplete frames wait for more bytes.
        assert_eq!(check(&[0x80, 3, 0, 6, 0, 0, 0, 4, 0]), Ok(None));
        // Unknown control types are passed on, to be ignored.
        assert_eq!(
            check(&[0x80, 3, 0, 0x42, 0, 0, 0, 0]),
            Ok(Some(Frame::Unknown { frame_type: 0x42 }))
        );
    }

    #[test]
    fn lying_pair_counts_are_errors() {
        let mut plain = Vec::new();
        plain.put_u32(1_000_000);
        plain.put_u32(1);
        plain.push(b'a');
        assert!(parse_pairs(&plain).is_err());
        let mut plain = Vec::new();
        plain.put_u32(1);
        plain.put_u32(100);
        plain.extend_from_slice(b"abcd");
        assert!(parse_pairs(&plain).is_err());
    }

    #[test]
    fn a_zlib_bomb_is_refused() -> Result<(), FrameError> {
        // One pair whose value is 1 MiB of zeroes compresses to a few KiB.
        let mut enc = Encoder::new();
        let mut wire = BytesMut::new();
        let big = "\0".repeat(1 << 20);
        enc.encode(
            &Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: vec![("x".into(), big)],
            },
            &mut wire,
        )?;
        let mut dec = Decoder::new();
        dec.push(&wire);
        assert_eq!(dec.next_frame(), Err(FrameError::HeaderBlockTooLarge));
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut dec = Decoder::new();
            dec.push(&bytes);
            while let Ok(Some(_)) = dec.next_frame() {}
        }

        #[test]
        fn arbitrary_payloads_after_a_valid_syn_never_panic(
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
            ty in 0u16..12,
        ) {
            let mut enc = Encoder::new();
            let mut wire = BytesMut::new();
            let _ = enc.encode(&all_frames()[0], &mut wire);
            let len = tail.len();
            wire.put_u16(0x8003);
            wire.put_u16(ty);
            wire.put_u32(len as u32);
            wire.extend_from_slice(&tail);
            let mut dec = Decoder::new();
            dec.push(&wire);
            while let Ok(Some(_)) = dec.next_frame() {}
        }
    }
}
