//! With `--otlp-endpoint` set, request spans reach an OTLP collector: a real OTLP/gRPC
//! `TraceService` (the opentelemetry-proto server types) receives the exported span with its
//! name, attributes and the service name.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use infermesh_common::telemetry::{TelemetryConfig, init_tracing};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

#[derive(Default, Clone)]
struct Collector(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_to_the_otlp_endpoint() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = Collector::default();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let guard = init_tracing(&TelemetryConfig {
        json_logs: false,
        otlp_endpoint: Some(format!("http://{addr}")),
        service_name: "infermesh-test".into(),
    })
    .unwrap();
    tracing::info_span!("infer", model = "fraud").in_scope(|| tracing::info!("inside a span"));
    // Dropping the guard flushes the batch exporter.
    tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || drop(guard)),
    )
    .await
    .unwrap()
    .unwrap();
    let got = collector.0.lock().unwrap().clone();
    server.abort();
    let spans: Vec<_> = got
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect();
    let infer = spans
        .iter()
        .find(|s| s.name == "infer")
        .expect("the infer span was exported");
    assert!(infer.attributes.iter().any(|a| a.key == "model"));
    let service = got[0].resource_spans[0].resource.as_ref().unwrap();
    assert!(format!("{:?}", service.attributes).contains("infermesh-test"));
}
