//! The gateway's OpenAPI 3.1 document, served at `/api/v1/openapi.json`.
//!
//! Written out as JSON beside the routes it describes; the gateway's tests check that every
//! route in the router appears here.

use axum::Json;
use serde_json::{Value, json};

fn error_response(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// The document.
pub fn spec() -> Value {
    let errors = json!({
        "400": error_response("Malformed JSON, unknown field, or input that does not fit the model (features, unreadable document)"),
        "404": error_response("Unknown model or version"),
        "413": error_response("Body over the size limit"),
        "429": error_response("The model's queue is full: retry later"),
        "503": error_response("The inference server is unavailable or the model is not ready"),
    });
    let with_ok = |ok: Value| {
        let mut r = errors.clone();
        r["200"] = ok;
        r
    };
    json!({
        "openapi": "3.1.0",
        "info": {"title": "infermesh gateway", "version": env!("CARGO_PKG_VERSION"),
                 "description": "JSON APIs of the infermesh ML inference mesh. Every response carries x-request-id."},
        "paths": {
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "The gateway is up"}}}},
            "/readyz": {"get": {"summary": "Readiness: the inference server answers", "responses": {
                "200": {"description": "Ready"}, "503": error_response("Inference server not reachable or not ready")}}},
            "/api/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI document"}}}},
            "/api/v1/fraud/score": {"post": {
                "summary": "Fraud probability, decision and reasons for one transaction",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ScoreRequest"}}}},
                "responses": with_ok(json!({"description": "Scored", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ScoreResponse"}}}})),
            }},
            "/api/v1/fraud/score/batch": {"post": {
                "summary": "Score up to 1000 transactions in one call",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ScoreBatchRequest"}}}},
                "responses": with_ok(json!({"description": "Scored, in request order", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ScoreBatchResponse"}}}})),
            }},
            "/api/v1/resumes/rank": {"post": {
                "summary": "Rank resumes (text or base64 PDF/DOCX) against a job description, with a score breakdown",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RankRequest"}}}},
                "responses": with_ok(json!({"description": "Candidates, best first", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RankResponse"}}}})),
            }},
        },
        "components": {"schemas": {
            "RankRequest": {"type": "object", "additionalProperties": false, "required": ["job_description", "resumes"], "properties": {
                "job_description": {"type": "string"},
                "resumes": {"type": "array", "minItems": 1, "maxItems": 200, "items": {"type": "object", "additionalProperties": false,
                    "required": ["id"], "properties": {"id": {"type": "string"}, "text": {"type": "string"},
                    "document_base64": {"type": "string", "description": "PDF, DOCX or text file, base64"}}}},
                "top_k": {"type": "integer", "minimum": 0},
                "weights": {"type": "object", "additionalProperties": false, "required": ["semantic", "skills", "experience"], "properties": {
                    "semantic": {"type": "number", "minimum": 0}, "skills": {"type": "number", "minimum": 0}, "experience": {"type": "number", "minimum": 0}}},
                "model": {"type": "string"}, "version": {"type": "string"}}},
            "RankResponse": {"type": "object", "properties": {
                "candidates": {"type": "array", "items": {"type": "object", "properties": {
                    "id": {"type": "string"}, "score": {"type": "number"}, "document_type": {"type": "string", "enum": ["text", "pdf", "docx"]},
                    "breakdown": {"type": "object", "properties": {
                        "semantic": {"type": "number"}, "skill_coverage": {"type": "number"}, "experience": {"type": "number"},
                        "matched_skills": {"type": "array", "items": {"type": "string"}},
                        "missing_skills": {"type": "array", "items": {"type": "string"}},
                        "required_years": {"type": ["number", "null"]}, "resume_years": {"type": ["number", "null"]}}}}}},
                "required_skills": {"type": "array", "items": {"type": "string"}},
                "model": {"type": "string"}, "version": {"type": "string"}}},
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
            "ScoreRequest": {"type": "object", "additionalProperties": false, "required": ["transaction_id"], "properties": {
                "transaction_id": {"type": "string", "minLength": 1},
                "features": {"type": "object", "additionalProperties": {"type": ["number", "null"]},
                             "description": "Features by name; null or absent is missing"},
                "model": {"type": "string", "description": "Default: the server's fraud model"},
                "version": {"type": "string", "description": "Default: the latest ready version"},
                "top_k": {"type": "integer", "minimum": 0, "maximum": 100, "description": "Reasons to return: 0 for none (cheapest); absent: 5"},
            }},
            "ScoreBatchRequest": {"type": "object", "additionalProperties": false, "required": ["transactions"], "properties": {
                "transactions": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {"$ref": "#/components/schemas/ScoreRequest"}},
                "model": {"type": "string"}, "version": {"type": "string"},
            }},
            "Reason": {"type": "object", "required": ["feature", "contribution"], "properties": {
                "feature": {"type": "string"}, "contribution": {"type": "number", "description": "TreeSHAP contribution to the log-odds"},
                "value": {"type": ["number", "null"]},
            }},
            "ScoreResponse": {"type": "object", "required": ["transaction_id", "probability", "is_fraud", "threshold", "reasons", "model", "version"], "properties": {
                "transaction_id": {"type": "string"}, "probability": {"type": "number"}, "is_fraud": {"type": "boolean"},
                "threshold": {"type": "number"}, "reasons": {"type": "array", "items": {"$ref": "#/components/schemas/Reason"}},
                "model": {"type": "string"}, "version": {"type": "string"},
            }},
            "ScoreBatchResponse": {"type": "object", "required": ["results"], "properties": {
                "results": {"type": "array", "items": {"$ref": "#/components/schemas/ScoreResponse"}}}},
        }},
    })
}

/// `GET /api/v1/openapi.json`.
pub async fn document() -> Json<Value> {
    Json(spec())
}
