//! `/openapi.json` against the real daemon with every intake connector configured: the
//! document is served open, is OpenAPI 3.1 under leadpipe's name and version, lists the
//! endpoints of both APIs, and agrees with the router both ways: every documented
//! operation is routed (never the "no route" fallback) and answers only statuses the
//! document lists for it; a documented error example is what the handler produces.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::{Options, Response, TestDaemon};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Every HTTP connector kind, configured, so that every intake route is mounted.
fn every_connector() -> String {
    format!(
        "[[event_sources]]\nname = \"sitechat\"\nsecret = \"site-chat-secret\"\ndefault_region = \"IT\"\n\n\
         [whatsapp]\napp_secret = \"app-secret\"\nverify_token = \"verify-me\"\nsource = \"whatsapp\"\n\n\
         [[telegram]]\nname = \"shop\"\ntoken = \"123456:TEST\"\nmode = \"webhook\"\n\
         secret_token = \"hook-secret\"\nsource = \"telegram-shop\"\n\n{}",
        crate::telephony::twilio_block("line1")
    )
}

async fn daemon() -> TestDaemon {
    TestDaemon::start_with(Options {
        extra_config: every_connector(),
        ..Options::default()
    })
    .await
}

async fn contract(daemon: &TestDaemon) -> Value {
    let response = daemon
        .http
        .get(format!("{}/openapi.json", daemon.base))
        .send()
        .await
        .expect("the daemon answers");
    let response = Response::read(response).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        response
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json")),
        "{:?}",
        response.headers
    );
    response.json()
}

/// A concrete URL path for a documented one: each `{param}` filled with a name the
/// configuration above declares (or an id).
fn concrete(path: &str) -> String {
    path.replace("{form}", "it-contatti")
        .replace("{source}", "sitechat")
        .replace(
            "{name}",
            if path.contains("telegram") {
                "shop"
            } else {
                "line1"
            },
        )
        .replace("{id}", "987654")
}

fn operations(api: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in api["paths"].as_object().expect("paths") {
        for method in METHODS.iter().chain(&["options"]) {
            if let Some(op) = item.get(*method) {
                out.push((method.to_string(), path.clone(), op.clone()));
            }
        }
    }
    out
}

async fn send(daemon: &TestDaemon, method: &str, path: &str, token: bool) -> Response {
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
    let mut request = daemon
        .http
        .request(method, format!("{}{path}", daemon.base));
    if token {
        request = request.bearer_auth(&daemon.admin);
    }
    Response::read(request.send().await.expect("the daemon answers")).await
}

/// The first property a JSON answer lacks that its documented schema requires.
fn missing_required(api: &Value, documented: &Value, answer: &Response) -> Option<String> {
    let mut schema = &documented["content"]["application/json"]["schema"];
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.strip_prefix("#/components/schemas/")?;
        schema = &api["components"]["schemas"][name];
    }
    let required = schema["required"].as_array()?;
    let body: Value = serde_json::from_slice(&answer.body).ok()?;
    required
        .iter()
        .filter_map(Value::as_str)
        .find(|key| body.get(*key).is_none())
        .map(str::to_owned)
}

fn is_fallback(response: &Response) -> bool {
    let code = serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned));
    matches!(
        code.as_deref(),
        Some("no_route") | Some("method_not_allowed")
    ) || response.status == 405
        || (response.status == 404 && response.body.is_empty())
}

#[tokio::test]
async fn the_contract_is_open_and_describes_both_apis() {
    let daemon = daemon().await;
    let api = contract(&daemon).await;
    assert_eq!(api["openapi"], "3.1.0");
    assert_eq!(api["info"]["title"], "leadpipe");
    assert_eq!(api["info"]["version"], env!("CARGO_PKG_VERSION"));
    let paths: BTreeSet<&str> = api["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    for expected in [
        "/v1/intake/forms/{form}",
        "/v1/intake/events/{source}",
        "/v1/intake/chat/whatsapp",
        "/v1/intake/chat/telegram/{name}",
        "/v1/intake/telephony/twilio/{name}",
        "/v1/leads",
        "/v1/leads/{id}",
        "/v1/leads/{id}/messages",
        "/v1/contacts",
        "/v1/contacts/{id}",
        "/v1/companies",
        "/v1/companies/{id}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(paths.contains(expected), "{expected} is not in {paths:?}");
    }
    // What a configured daemon serves is what the registrations describe, nothing more.
    let described = serde_json::to_value(leadpipe::api::described()).expect("serialises");
    assert_eq!(api, described);
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_answers_as_documented() {
    let daemon = daemon().await;
    let api = contract(&daemon).await;
    let mut wrong = Vec::new();
    for (method, path, op) in operations(&api) {
        let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
        let url = concrete(&path);
        let answer = send(&daemon, &method, &url, secured).await;
        let name = format!("{} {path}", method.to_uppercase());
        if is_fallback(&answer) {
            wrong.push(format!(
                "{name}: answered by the fallback ({} {})",
                answer.status,
                answer.text()
            ));
            continue;
        }
        let documented = &op["responses"][answer.status.to_string()];
        if !documented.is_object() {
            wrong.push(format!(
                "{name}: answered {} which is not documented: {}",
                answer.status,
                answer.text()
            ));
        } else if let Some(missing) = missing_required(&api, documented, &answer) {
            wrong.push(format!(
                "{name}: {} lacks `{missing}`: {}",
                answer.status,
                answer.text()
            ));
        } else if answer.status >= 400
            && documented["content"]["application/json"]["schema"]["$ref"]
                == "#/components/schemas/Problem"
        {
            let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
            if !(body["error"].is_string() && body["message"].is_string()) {
                wrong.push(format!(
                    "{name}: {} is not a Problem: {}",
                    answer.status,
                    answer.text()
                ));
            }
        }
        if secured {
            let anonymous = send(&daemon, &method, &url, false).await;
            if anonymous.status != 401 || !op["responses"]["401"].is_object() {
                wrong.push(format!(
                    "{name}: without a token answered {}: {}",
                    anonymous.status,
                    anonymous.text()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // And the other way round: what is not documented is the fallback, as JSON.
    let nothing = send(&daemon, "get", "/v1/nothing-here", true).await;
    nothing.assert_error(404, "no_route");
    let wrong_method = send(&daemon, "delete", "/healthz", false).await;
    wrong_method.assert_error(405, "method_not_allowed");
}

#[tokio::test]
async fn a_documented_error_example_is_what_the_handler_answers() {
    let daemon = daemon().await;
    let api = contract(&daemon).await;
    let example = &api["paths"]["/v1/leads/{id}/messages"]["post"]["responses"]["422"]["content"]["application/json"]
        ["example"];
    assert!(example["error"].is_string(), "no example: {example}");
    let answer = daemon
        .post_json("/v1/leads/1/messages", serde_json::json!({"text": "   "}))
        .await;
    answer.assert_error(422, example["error"].as_str().expect("a code"));
    assert_eq!(answer.json()["message"], example["message"]);
}
