//! Real documents (`tests/corpus/`: what linuxkit, docker, BuildKit and skopeo wrote; its README
//! says which wrote what) read and written back: with lkpkg's types ([`lkpkg_types`]), which must
//! lose nothing, and with oci-spec's ([`against_oci_spec`]), whose losses are pinned.

mod against_oci_spec;
mod lkpkg_types;
mod support;
