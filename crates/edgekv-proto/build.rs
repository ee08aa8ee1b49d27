//! Compiles `proto/` with protox, a protobuf compiler in pure Rust: building edgekv
//! needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not baked in when it is compiled: one target dir
    // may serve checkouts at different paths, and cargo reuses the compiled script.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "edgekv/v1/origin.proto",
        "edgekv/v1/control.proto",
        "edgekv/v1/edge.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let descriptors = protox::compile(files, [&root])?;
    // The encoded descriptors, for gRPC server reflection (grpcurl and friends).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("edgekv_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_build::configure()
        // Values and metadata are `Bytes`: shared with the transport, never copied.
        .bytes(["."])
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
