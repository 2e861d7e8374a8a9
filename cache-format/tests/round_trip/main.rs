//! Real documents (`tests/corpus/`: what linuxkit, docker, BuildKit and skopeo wrote; its README
//! says which wrote what) read and written back with lkpkg's types ([`lkpkg_types`]), which must
//! lose nothing.

mod lkpkg_types;
mod support;
