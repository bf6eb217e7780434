//! Generates the gRPC code into OUT_DIR with protox (no protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // The inference server's protocols: its descriptor set is what its gRPC reflection
    // advertises, so it holds only what that server serves.
    let serving = [
        "proto/kserve/grpc_predict_v2.proto",
        "proto/infermesh/v1/fraud.proto",
        "proto/infermesh/v1/text.proto",
        "proto/infermesh/v1/resume.proto",
        "proto/infermesh/v1/recs.proto",
    ];
    // Feast's (the feature server's), apart.
    let feast = [
        "proto/feast/types/Value.proto",
        "proto/feast/types/EntityKey.proto",
        "proto/feast/serving/ServingService.proto",
        "proto/feast/serving/GrpcServer.proto",
        "proto/feast/core/Registry.proto",
    ];
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    for (files, descriptor) in [
        (&serving[..], "descriptor.bin"),
        (&feast[..], "feast_descriptor.bin"),
    ] {
        let fds = protox::compile(files, ["proto"])?;
        std::fs::write(out.join(descriptor), prost::Message::encode_to_vec(&fds))?;
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .compile_fds(fds)?;
    }
    Ok(())
}
