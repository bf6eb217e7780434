//! Generates the gRPC code of the two typed inference services the reviews processor calls
//! (feature "reviews"): `infermesh.v1.Sentiment` and `infermesh.v1.Topics`, from the model
//! crates' proto files, with protox (no protoc needed). Clients for the processor; servers too,
//! because the tests stand up a tonic server of those services (one build script cannot
//! generate code for tests only). Nothing of the model crates is linked: only their `.proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTOS: [&str; 2] = [
        "../models/sentiment/proto/infermesh/v1/sentiment.proto",
        "../models/topics/proto/infermesh/v1/topics.proto",
    ];
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    if std::env::var_os("CARGO_FEATURE_REVIEWS").is_none() {
        return Ok(());
    }
    let fds = protox::compile(
        PROTOS,
        ["../models/sentiment/proto", "../models/topics/proto"],
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
