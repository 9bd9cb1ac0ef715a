//! The `tickmesh` program: the command line (`main.rs`) over the mesh
//! process ([`mesh`], [`dev`], [`demo_feed`], [`replay`], from
//! `tickmesh-mesh`) and the benchmarks ([`bench`], from `tickmesh-bench`).

pub use tickmesh_bench as bench;
pub use tickmesh_mesh::{demo_feed, dev, mesh, replay};
