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
//!   (the layout's `index.json`, which is never hashed).

use serde::Serialize;

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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

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
