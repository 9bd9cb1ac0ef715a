//! The `tickmesh` program as a library: assembling a mesh process from
//! config ([`mesh`]), development mode ([`dev`], [`demo_feed`]), trade file
//! replay ([`replay`]) and benchmarks ([`bench`]). `main.rs` is only the CLI.

pub mod bench;
pub mod demo_feed;
pub mod dev;
pub mod mesh;
pub mod replay;
