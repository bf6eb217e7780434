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
            "/api/v1/recommendations/{user_id}": {"get": {
                "summary": "The k best items for a user (cached; A/B arm and shadow model per the gateway config)",
                "parameters": [
                    {"name": "user_id", "in": "path", "required": true,
                     "schema": {"type": "string", "minLength": 1, "maxLength": 256},
                     "description": "1 to 256 bytes, no control characters"},
                    {"name": "k", "in": "query", "required": false,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}},
                    {"name": "recent", "in": "query", "required": false,
                     "schema": {"type": "string", "enum": ["exclude", "boost"]},
                     "description": "What to do with the user's last viewed items (POST /api/v1/events): never recommend them, or raise their scores; absent: they only shape the profile"},
                ],
                "responses": with_ok(json!({"description": "Items, best first", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RecommendationsResponse"}}}})),
            }},
            "/api/v1/events": {"post": {
                "summary": "Record a user behaviour event (topic user.behavior): a view feeds the user's recent items, a purchase drops their cached recommendations, a click with source \"recommendations\" counts for their A/B arm",
                "requestBody": {"required": true, "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Event"}},
                    "text/plain": {"schema": {"$ref": "#/components/schemas/Event"},
                                   "description": "The same JSON, as navigator.sendBeacon sends a string body"}}},
                "responses": {
                    "202": {"description": "Accepted", "content": {"application/json": {"schema": {"type": "object", "required": ["accepted"], "properties": {"accepted": {"const": true}}}}}},
                    "400": error_response("Malformed JSON, unknown field, bad id or timestamp, or a content type other than JSON or text"),
                    "413": error_response("Body over the size limit"),
                    "503": error_response("The event could not be published"),
                },
            }},
            "/api/v1/reviews": {"post": {
                "summary": "Submit a product review (topic reviews.submitted): the reviews pipeline scores its sentiment and topic, stores it and feeds the live gauges. Answers once the event bus holds it; never waits on processing",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Review"}}}},
                "responses": {
                    "202": {"description": "Accepted", "content": {"application/json": {"schema": {"type": "object", "required": ["review_id", "status"], "properties": {
                        "review_id": {"type": "string", "description": "The caller's, or a new UUID"}, "status": {"const": "accepted"}}}}}},
                    "400": error_response("Malformed JSON, a body that is not UTF-8, unknown field, empty text, rating outside 1..5, bad id or timestamp"),
                    "413": error_response("Text over 16 KiB, or body over the size limit"),
                    "429": error_response("The event bus is full: retry later"),
                    "503": error_response("The review pipeline is off (no event bus configured) or the bus failed"),
                },
            }},
            "/api/v1/experiments": {"get": {
                "summary": "A/B experiments with their impression and click counts per arm (read by `infermesh ab report`)",
                "responses": {
                    "200": {"description": "Experiments", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExperimentsResponse"}}}},
                    "503": error_response("The counts' store (Redis) does not answer"),
                },
            }},
            "/t.js": {"get": {
                "summary": "Browser tracker (<= 200 bytes): defines imt(event, user_id, product_id[, source]) posting to /api/v1/events with navigator.sendBeacon, and sends a view when its script tag has data-u and data-p",
                "responses": {"200": {"description": "JavaScript", "content": {"application/javascript": {"schema": {"type": "string"}}}}},
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
            "RecommendationsResponse": {"type": "object", "required": ["user_id", "items", "model", "version", "strategy", "experiment", "cached"], "properties": {
                "user_id": {"type": "string"},
                "items": {"type": "array", "items": {"type": "object", "required": ["item_id", "score"], "properties": {
                    "item_id": {"type": "string"}, "score": {"type": "number", "description": "Higher is better; comparable within one answer"}}}},
                "model": {"type": "string"}, "version": {"type": "string"},
                "strategy": {"type": "string", "enum": ["personalised", "user_features", "popularity", "unspecified"],
                             "description": "The user's history, their features (cold start), or popularity (unknown user)"},
                "experiment": {"oneOf": [{"type": "null"}, {"type": "object", "required": ["name", "arm"], "properties": {
                    "name": {"type": "string"}, "arm": {"type": "string"}}}]},
                "cached": {"type": "boolean"}}},
            "Event": {"type": "object", "additionalProperties": false, "required": ["event", "user_id", "product_id"], "properties": {
                "event": {"type": "string", "enum": ["view", "click", "purchase"]},
                "user_id": {"type": "string", "minLength": 1, "maxLength": 256},
                "product_id": {"type": "string", "minLength": 1, "maxLength": 256},
                "session_id": {"type": "string", "minLength": 1, "maxLength": 256},
                "ts": {"oneOf": [{"type": "integer", "description": "Unix milliseconds"}, {"type": "string", "format": "date-time"}],
                       "description": "Default: when the gateway received it"},
                "source": {"type": "string", "description": "e.g. \"recommendations\" for a click on a recommended item"}}},
            "Review": {"type": "object", "additionalProperties": false, "required": ["product_id", "text"], "properties": {
                "review_id": {"type": "string", "minLength": 1, "maxLength": 256, "description": "Default: a new UUID; resubmitting an id replaces that review downstream"},
                "product_id": {"type": "string", "minLength": 1, "maxLength": 256},
                "text": {"type": "string", "minLength": 1, "description": "At most 16 KiB (UTF-8 bytes); not only whitespace"},
                "rating": {"type": "integer", "minimum": 1, "maximum": 5},
                "ts": {"oneOf": [{"type": "integer", "description": "Unix milliseconds"}, {"type": "string", "format": "date-time"}],
                       "description": "Default: when the gateway received it"}}},
            "ExperimentsResponse": {"type": "object", "required": ["experiments"], "properties": {
                "experiments": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "salt": {"type": "string"}, "route": {"type": "string"},
                    "arms": {"type": "array", "items": {"type": "object", "properties": {
                        "name": {"type": "string"}, "model": {"type": "string"}, "version": {"type": "string", "description": "\"\" = latest"},
                        "weight": {"type": "integer"}, "impressions": {"type": "integer"}, "clicks": {"type": "integer"}}}},
                    "shadow": {"oneOf": [{"type": "null"}, {"type": "object", "properties": {"model": {"type": "string"}, "version": {"type": "string"}}}]}}}}}},
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
