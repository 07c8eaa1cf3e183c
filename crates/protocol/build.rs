//! Generates Rust types for the wire contract with protox (no protoc) and
//! keeps the descriptor set for the proto3 JSON codec.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let sync = proto_dir.join("protosync/v1/sync.proto");
    println!("cargo:rerun-if-changed={}", sync.display());
    let descriptors = protox::compile([&sync], [&proto_dir])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("sync_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
