//! Byte layouts of what the embedded store keeps in redb.
//!
//! Two records: the current value of a key (`kv` table) and one entry of the
//! revision log (`log` table, keyed by revision). Both start with a format
//! byte so a later layout can be told apart. Decoding never panics: a short
//! or malformed record is a corrupt file and becomes [`Error::Backend`].

use bytes::Bytes;

use crate::storage::{Error, KeyValue, Result, WatchEvent};

const FORMAT_V1: u8 = 1;
const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;

/// Encodes a key's current record: format, create revision, mod revision, value.
pub(super) fn encode_record(create_revision: i64, mod_revision: i64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(17 + value.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&create_revision.to_le_bytes());
    out.extend_from_slice(&mod_revision.to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// Decodes the record of `key` written by [`encode_record`].
pub(super) fn decode_record(key: &str, raw: &[u8]) -> Result<KeyValue> {
    let mut r = Reader::new(raw, "key record");
    r.format()?;
    let create_revision = r.i64()?;
    let mod_revision = r.i64()?;
    let value = Bytes::copy_from_slice(r.rest());
    Ok(KeyValue {
        key: key.to_owned(),
        value,
        create_revision,
        mod_revision,
    })
}

/// Encodes a log entry. The key comes first so a replay can filter by prefix
/// without copying values it will skip. The revision is the log table's key
/// and is not repeated here.
///
/// Layout: format, kind, key (u32 length + bytes), for a put the new
/// create revision and value (u64 length + bytes), then an optional previous
/// key-value (flag, create, mod, value).
pub(super) fn encode_event(event: &WatchEvent) -> Vec<u8> {
    let (kind, key, current, prev) = match event {
        WatchEvent::Put { kv, prev } => (KIND_PUT, kv.key.as_str(), Some(kv), prev.as_ref()),
        WatchEvent::Delete { prev, .. } => (KIND_DELETE, prev.key.as_str(), None, Some(prev)),
    };
    let size = 64
        + key.len()
        + current.map_or(0, |kv| kv.value.len())
        + prev.map_or(0, |kv| kv.value.len());
    let mut out = Vec::with_capacity(size);
    out.push(FORMAT_V1);
    out.push(kind);
    put_bytes32(&mut out, key.as_bytes());
    if let Some(kv) = current {
        out.extend_from_slice(&kv.create_revision.to_le_bytes());
        put_bytes64(&mut out, &kv.value);
    }
    match prev {
        Some(prev) => {
            out.push(1);
            out.extend_from_slice(&prev.create_revision.to_le_bytes());
            out.extend_from_slice(&prev.mod_revision.to_le_bytes());
            put_bytes64(&mut out, &prev.value);
        }
        None => out.push(0),
    }
    out
}

/// The key a log entry is about, without decoding its values.
pub(super) fn event_key(raw: &[u8]) -> Result<&str> {
    let mut r = Reader::new(raw, "log entry");
    r.format()?;
    r.u8()?;
    r.str32()
}

/// Decodes the log entry of `revision` written by [`encode_event`].
pub(super) fn decode_event(revision: i64, raw: &[u8]) -> Result<WatchEvent> {
    let mut r = Reader::new(raw, "log entry");
    r.format()?;
    let kind = r.u8()?;
    let key = r.str32()?.to_owned();
    let current = match kind {
        KIND_PUT => {
            let create_revision = r.i64()?;
            let value = Bytes::copy_from_slice(r.bytes64()?);
            Some(KeyValue {
                key: key.clone(),
                value,
                create_revision,
                mod_revision: revision,
            })
        }
        KIND_DELETE => None,
        other => return Err(r.corrupt(&format!("unknown event kind {other}"))),
    };
    let prev = match r.u8()? {
        0 => None,
        1 => {
            let create_revision = r.i64()?;
            let mod_revision = r.i64()?;
            let value = Bytes::copy_from_slice(r.bytes64()?);
            Some(KeyValue {
                key,
                value,
                create_revision,
                mod_revision,
            })
        }
        other => return Err(r.corrupt(&format!("bad previous-value flag {other}"))),
    };
    r.finish()?;
    match (current, prev) {
        (Some(kv), prev) => Ok(WatchEvent::Put { kv, prev }),
        (None, Some(prev)) => Ok(WatchEvent::Delete { prev, revision }),
        (None, None) => Err(r.corrupt("delete without a previous value")),
    }
}

fn put_bytes32(out: &mut Vec<u8>, bytes: &[u8]) {
    // Keys are bounded far below 4 GiB by the API layer; saturate rather than
    // panic, the decoder then reports the record as corrupt.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_bytes64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A cursor over a record that turns every shortfall into a corruption error.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    fn corrupt(&self, detail: &str) -> Error {
        Error::Backend(format!("corrupt {}: {detail}", self.what))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(self.corrupt(&format!("needs {n} more bytes, has {}", self.buf.len())));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn format(&mut self) -> Result<()> {
        match self.u8()? {
            FORMAT_V1 => Ok(()),
            other => Err(self.corrupt(&format!("unknown format {other}"))),
        }
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn str32(&mut self) -> Result<&'a str> {
        let len = u32::from_le_bytes(self.array()?);
        let len = usize::try_from(len).map_err(|_| self.corrupt("length overflows usize"))?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| self.corrupt("key is not UTF-8"))
    }

    fn bytes64(&mut self) -> Result<&'a [u8]> {
        let len = u64::from_le_bytes(self.array()?);
        let len = usize::try_from(len).map_err(|_| self.corrupt("length overflows usize"))?;
        self.take(len)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn finish(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.corrupt(&format!("{} trailing bytes", self.buf.len())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, create: i64, modr: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Bytes::from(value.to_owned()),
            create_revision: create,
            mod_revision: modr,
        }
    }

    #[test]
    fn records_round_trip() {
        let raw = encode_record(3, 7, b"hello");
        assert_eq!(
            decode_record("/k", &raw).ok(),
            Some(kv("/k", "hello", 3, 7))
        );
    }

    #[test]
    fn events_round_trip_with_and_without_prev() {
        let events = [
            WatchEvent::Put {
                kv: kv("/a", "v2", 2, 5),
                prev: Some(kv("/a", "v1", 2, 2)),
            },
            WatchEvent::Put {
                kv: kv("/b", "", 6, 6),
                prev: None,
            },
            WatchEvent::Delete {
                prev: kv("/a", "v2", 2, 5),
                revision: 9,
            },
        ];
        for event in events {
            let raw = encode_event(&event);
            assert_eq!(event_key(&raw).ok(), Some(event.key_for_test()));
            assert_eq!(
                decode_event(event.revision(), &raw).ok(),
                Some(event.clone())
            );
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let event = WatchEvent::Put {
            kv: kv("/a", "v2", 2, 5),
            prev: Some(kv("/a", "v1", 2, 2)),
        };
        let raw = encode_event(&event);
        for len in 0..raw.len() {
            assert!(
                matches!(decode_event(5, &raw[..len]), Err(Error::Backend(_))),
                "prefix of {len} bytes decoded"
            );
        }
        assert!(matches!(
            decode_record("/k", &[FORMAT_V1, 0, 0]),
            Err(Error::Backend(_))
        ));
        assert!(matches!(decode_record("/k", &[]), Err(Error::Backend(_))));
        assert!(matches!(
            decode_event(5, &[9, 9, 9]),
            Err(Error::Backend(_))
        ));
    }

    impl WatchEvent {
        fn key_for_test(&self) -> &str {
            match self {
                WatchEvent::Put { kv, .. } => &kv.key,
                WatchEvent::Delete { prev, .. } => &prev.key,
            }
        }
    }
}
