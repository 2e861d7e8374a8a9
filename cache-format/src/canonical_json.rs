//! Byte-stable JSON for everything lkpkg hashes (manifests, indexes) and for `index.json`.
//!
//! A `HashMap` (oci-spec's types hold them, for one) iterates in a different order on each run,
//! so serializing a document directly can give a different digest each time. Everything lkpkg
//! writes goes through [`serde_json::Value`] first: without serde_json's `preserve_order`
//! feature its objects are `BTreeMap`s, so keys come out sorted at every level. The digest is
//! always computed over the exact bytes returned here, which are the bytes written to disk.
//!
//! - [`to_vec`]: compact, sorted keys, no trailing newline (blobs: manifests, indexes).
//! - [`to_vec_index_json`]: sorted keys, 3-space indentation like linuxkit's `MarshalIndent`
//!   (the layout's `index.json`, which is never hashed); [`write_index_json`] writes the same
//!   bytes as it makes them, one entry's tree of values at a time.

use serde::Serialize;
use serde::ser::{Error as _, SerializeMap, SerializeSeq, Serializer};

use crate::layout::{Descriptor, ImageIndex};

/// Compact canonical JSON: sorted object keys, no insignificant whitespace.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let value = serde_json::to_value(value)?;
    serde_json::to_vec(&value)
}

/// Sorted keys, indented with three spaces, as linuxkit writes `index.json`.
pub fn to_vec_index_json<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let value = serde_json::to_value(value)?;
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"   ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    value.serialize(&mut serializer)?;
    Ok(out)
}

/// [`to_vec_index_json`] of an image index, written to `out` as it is made: the same bytes,
/// without the whole document in memory (as the tree of values sorting goes through, many
/// times the size of the text). A cache's `index.json` of 10,000 names is about 4 MB, and it
/// is written at each publication.
pub fn write_index_json<W: std::io::Write>(index: &ImageIndex, out: W) -> serde_json::Result<()> {
    /// The entries, each turned into a tree of values (sorted keys) only while it is written.
    struct Entries<'a>(&'a [Descriptor]);
    impl Serialize for Entries<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
            for entry in self.0 {
                seq.serialize_element(&serde_json::to_value(entry).map_err(S::Error::custom)?)?;
            }
            seq.end()
        }
    }
    /// The index's own fields, sorted, with its entries streamed in their place.
    struct Index<'a> {
        fields: serde_json::Map<String, serde_json::Value>,
        entries: Entries<'a>,
    }
    impl Serialize for Index<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(Some(self.fields.len()))?;
            for (key, value) in &self.fields {
                if key == "manifests" {
                    map.serialize_entry(key, &self.entries)?;
                } else {
                    map.serialize_entry(key, value)?;
                }
            }
            map.end()
        }
    }
    let shell = ImageIndex {
        schema_version: index.schema_version,
        media_type: index.media_type.clone(),
        manifests: Vec::new(),
        annotations: index.annotations.clone(),
        extra: index.extra.clone(),
    };
    let serde_json::Value::Object(fields) = serde_json::to_value(&shell)? else {
        return Err(serde_json::Error::custom("an image index is a JSON object"));
    };
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"   ");
    let mut serializer = serde_json::Serializer::with_formatter(out, formatter);
    Index {
        fields,
        entries: Entries(&index.manifests),
    }
    .serialize(&mut serializer)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// The streamed `index.json` is byte for byte the one made whole, with every kind of field.
    #[test]
    fn index_json_streams_the_same_bytes() {
        let text = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
            "zExtra":{"b":1,"a":[true,null]},"annotations":{"z":"1","a":"2"},
            "manifests":[
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":7,
               "digest":"sha256:0123456789012345678901234567890123456789012345678901234567890123",
               "platform":{"os":"linux","architecture":"arm64","variant":"v8"},
               "annotations":{"org.opencontainers.image.ref.name":"docker.io/a/b:c-arm64"},
               "unknown":{"y":2,"x":1}},
              {"mediaType":"application/vnd.oci.image.index.v1+json","size":1,
               "digest":"sha256:1123456789012345678901234567890123456789012345678901234567890123"}
            ]}"#;
        let index: ImageIndex = serde_json::from_str(text).unwrap();
        let mut streamed = Vec::new();
        write_index_json(&index, &mut streamed).unwrap();
        assert_eq!(
            String::from_utf8(streamed).unwrap(),
            String::from_utf8(to_vec_index_json(&index).unwrap()).unwrap()
        );
        let empty = ImageIndex::empty();
        let mut streamed = Vec::new();
        write_index_json(&empty, &mut streamed).unwrap();
        assert_eq!(streamed, to_vec_index_json(&empty).unwrap());
    }

    #[test]
    fn hash_maps_serialize_identically() {
        let mut first = None;
        for _ in 0..50 {
            let map: HashMap<String, u32> = (0..20).map(|i| (format!("k{i}"), i)).collect();
            let bytes = to_vec(&map).unwrap();
            assert_eq!(*first.get_or_insert_with(|| bytes.clone()), bytes);
        }
        assert!(first.unwrap().starts_with(b"{\"k0\":0,\"k1\":1,\"k10\":10"));
    }

    /// Sorting rests on serde_json's objects being `BTreeMap`s: a dependency that turned on
    /// its `preserve_order` feature (objects in insertion order) would change every digest
    /// lkpkg writes, and fails here first.
    #[test]
    fn struct_fields_come_out_sorted() {
        #[derive(Serialize)]
        struct Late {
            zeta: u8,
            alpha: u8,
        }
        assert_eq!(
            to_vec(&Late { zeta: 1, alpha: 2 }).unwrap(),
            br#"{"alpha":2,"zeta":1}"#
        );
    }

    #[test]
    fn index_json_uses_three_spaces() {
        let v = serde_json::json!({"b": [1], "a": 2});
        let s = String::from_utf8(to_vec_index_json(&v).unwrap()).unwrap();
        assert_eq!(s, "{\n   \"a\": 2,\n   \"b\": [\n      1\n   ]\n}");
    }
}
