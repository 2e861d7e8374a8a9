//! The redb index beside the layout: its file name, table names, schema version, and the byte
//! encoding of every record. The engine's store opens the tables with these names; this module
//! only defines what the bytes mean (no redb dependency here).
//!
//! | table            | key                         | value                                   |
//! |------------------|-----------------------------|-----------------------------------------|
//! | `schema`         | `"version"` (str)           | u64: [`SCHEMA_VERSION`]                 |
//! | `meta`           | `"index_json"` (str)        | [`IndexStamp`]: what index.json was     |
//! | `refs`           | canonical name (str)        | [`RefRecord`]: root descriptor, last use|
//! | `blobs`          | `sha256:<hex>` (str)        | [`BlobRecord`]: size, type, refs, use   |
//! | `pending`        | `sha256:<hex>` (str)        | u64: deadline (unix ms) of an ingest pin |
//! | `build_records`  | 32-byte blake3 build key    | [`crate::build_record::BuildRecord`] bytes |
//! | `unit_builds`    | unit (`pkg/dir/arch`, str)  | 32-byte build key of the unit's last build |
//!
//! Every record starts with a one-byte record version; integers are little-endian. A decoder
//! refuses versions it does not know ([`RecordError`]); the store then re-indexes from
//! `index.json`, which is always the truth.

use crate::digest::Digest;
use crate::layout::Descriptor;

/// The database file, relative to the cache directory. The schema generation is in the name.
pub const DB_FILE: &str = "lkpkg-index-v1.redb";
/// The schema version stored in the `schema` table.
pub const SCHEMA_VERSION: u64 = 1;

pub const TABLE_SCHEMA: &str = "schema";
pub const TABLE_META: &str = "meta";
pub const TABLE_REFS: &str = "refs";
pub const TABLE_BLOBS: &str = "blobs";
pub const TABLE_PENDING: &str = "pending";
pub const TABLE_BUILD_RECORDS: &str = "build_records";
pub const TABLE_UNIT_BUILDS: &str = "unit_builds";

/// Key of the schema version in `schema`.
pub const KEY_SCHEMA_VERSION: &str = "version";
/// Key of the [`IndexStamp`] in `meta`.
pub const KEY_INDEX_STAMP: &str = "index_json";

const RECORD_V1: u8 = 1;

/// A stored record that cannot be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("unknown {kind} record version {version}")]
    UnknownVersion { kind: &'static str, version: u8 },
    #[error("truncated {kind} record")]
    Truncated { kind: &'static str },
    #[error("malformed {kind} record: {detail}")]
    Malformed { kind: &'static str, detail: String },
}

struct Reader<'a> {
    kind: &'static str,
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(kind: &'static str, bytes: &'a [u8]) -> Result<Reader<'a>, RecordError> {
        match bytes.first() {
            Some(&RECORD_V1) => Ok(Reader {
                kind,
                bytes: &bytes[1..],
            }),
            Some(&version) => Err(RecordError::UnknownVersion { kind, version }),
            None => Err(RecordError::Truncated { kind }),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.bytes.len() < n {
            return Err(RecordError::Truncated { kind: self.kind });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(self.u64()? as i64)
    }

    fn rest(self) -> &'a [u8] {
        self.bytes
    }
}

/// `refs` value: the root descriptor a name points at, and when it was last used.
#[derive(Clone, Debug, PartialEq)]
pub struct RefRecord {
    /// The `index.json` entry (with its annotations) exactly as stored there.
    pub descriptor: Descriptor,
    /// Unix milliseconds of the last write or lookup (LRU trimming in `gc --max-size`).
    pub last_use_ms: u64,
}

impl RefRecord {
    /// `[1][last_use_ms u64][canonical JSON of the descriptor]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![RECORD_V1];
        out.extend_from_slice(&self.last_use_ms.to_le_bytes());
        // Serializing a descriptor (strings, numbers, maps with string keys) cannot fail.
        out.extend(crate::canonical_json::to_vec(&self.descriptor).unwrap_or_default());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<RefRecord, RecordError> {
        let kind = "ref";
        let mut r = Reader::new(kind, bytes)?;
        let last_use_ms = r.u64()?;
        let descriptor = serde_json::from_slice(r.rest()).map_err(|e| RecordError::Malformed {
            kind,
            detail: e.to_string(),
        })?;
        Ok(RefRecord {
            descriptor,
            last_use_ms,
        })
    }
}

/// `blobs` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobRecord {
    pub size: u64,
    pub media_type: String,
    /// How many names' closures contain this blob (a name counts once).
    pub refcount: u64,
    pub last_use_ms: u64,
}

impl BlobRecord {
    /// `[1][size u64][refcount u64][last_use_ms u64][media type, UTF-8]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![RECORD_V1];
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.refcount.to_le_bytes());
        out.extend_from_slice(&self.last_use_ms.to_le_bytes());
        out.extend_from_slice(self.media_type.as_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<BlobRecord, RecordError> {
        let kind = "blob";
        let mut r = Reader::new(kind, bytes)?;
        let size = r.u64()?;
        let refcount = r.u64()?;
        let last_use_ms = r.u64()?;
        let media_type =
            String::from_utf8(r.rest().to_vec()).map_err(|e| RecordError::Malformed {
                kind,
                detail: e.to_string(),
            })?;
        Ok(BlobRecord {
            size,
            media_type,
            refcount,
            last_use_ms,
        })
    }
}

/// What `index.json` was when redb last indexed it. A cheap `stat` comparison decides freshness;
/// when the stat differs, the sha256 decides whether a re-index is needed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct IndexStamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
    pub ctime_sec: i64,
    pub ctime_nsec: i64,
    pub sha256: Option<Digest>,
}

impl IndexStamp {
    /// Whether the `stat` parts agree (the hash is not compared).
    pub fn same_stat(&self, other: &IndexStamp) -> bool {
        (
            self.dev,
            self.ino,
            self.size,
            self.mtime_sec,
            self.mtime_nsec,
            self.ctime_sec,
            self.ctime_nsec,
        ) == (
            other.dev,
            other.ino,
            other.size,
            other.mtime_sec,
            other.mtime_nsec,
            other.ctime_sec,
            other.ctime_nsec,
        )
    }

    /// `[1][dev][ino][size][mtime s][mtime ns][ctime s][ctime ns]` then 32 sha256 bytes if known.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![RECORD_V1];
        for v in [self.dev, self.ino, self.size] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [
            self.mtime_sec,
            self.mtime_nsec,
            self.ctime_sec,
            self.ctime_nsec,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(d) = &self.sha256 {
            out.extend_from_slice(d.as_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<IndexStamp, RecordError> {
        let kind = "index stamp";
        let mut r = Reader::new(kind, bytes)?;
        let mut stamp = IndexStamp {
            dev: r.u64()?,
            ino: r.u64()?,
            size: r.u64()?,
            mtime_sec: r.i64()?,
            mtime_nsec: r.i64()?,
            ctime_sec: r.i64()?,
            ctime_nsec: r.i64()?,
            sha256: None,
        };
        let rest = r.rest();
        if rest.len() == 32 {
            let mut b = [0u8; 32];
            b.copy_from_slice(rest);
            stamp.sha256 = Some(Digest::from_bytes(b));
        } else if !rest.is_empty() {
            return Err(RecordError::Truncated { kind });
        }
        Ok(stamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let blob = BlobRecord {
            size: 5,
            media_type: "application/x".into(),
            refcount: 2,
            last_use_ms: 9,
        };
        assert_eq!(BlobRecord::decode(&blob.encode()).unwrap(), blob);
        let r = RefRecord {
            descriptor: Descriptor::new("m", Digest::of(b"x"), 1),
            last_use_ms: 3,
        };
        assert_eq!(RefRecord::decode(&r.encode()).unwrap(), r);
        let s = IndexStamp {
            ino: 7,
            sha256: Some(Digest::of(b"y")),
            ..IndexStamp::default()
        };
        assert_eq!(IndexStamp::decode(&s.encode()).unwrap(), s);
        assert!(matches!(
            BlobRecord::decode(&[9, 0]),
            Err(RecordError::UnknownVersion { version: 9, .. })
        ));
    }
}
