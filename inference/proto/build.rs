//! Generates the gRPC code into OUT_DIR with protox (no protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = [
        "proto/kserve/grpc_predict_v2.proto",
        "proto/infermesh/v1/fraud.proto",
        "proto/infermesh/v1/text.proto",
        "proto/infermesh/v1/resume.proto",
        "proto/infermesh/v1/recs.proto",
        "proto/feast/types/Value.proto",
        "proto/feast/types/EntityKey.proto",
        "proto/feast/serving/ServingService.proto",
        "proto/feast/serving/GrpcServer.proto",
        "proto/feast/core/Registry.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
