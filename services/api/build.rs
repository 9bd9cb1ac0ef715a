//! Generates the tickmesh API from `proto/` with a pure-Rust protobuf compiler
//! (protox), so building needs no system `protoc`, and writes the descriptor set
//! that server reflection serves.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let root = root.canonicalize()?;
    let mut files = Vec::new();
    collect_protos(&root, &mut files)?;
    files.sort();

    // tonic-prost-build 0.14 does not print these itself.
    println!("cargo:rerun-if-changed={}", root.display());
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let descriptors = protox::compile(&files, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("tickmesh_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;

    // google.rpc error details: descriptors only, for reflection.
    let vendor = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto-vendor");
    let details = vendor.join("google/rpc/error_details.proto");
    println!("cargo:rerun-if-changed={}", details.display());
    let rpc = protox::compile([&details], [&vendor])?;
    std::fs::write(
        out_dir.join("google_rpc_descriptor.bin"),
        prost::Message::encode_to_vec(&rpc),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
