//! `GET /openapi.json`: the contract of every HTTP endpoint, the ops API and the intake
//! API, as OpenAPI 3.1.
//!
//! The document is assembled from the same registrations the router is built from
//! ([`super::application`]): every handler is registered with `utoipa_axum::routes!`,
//! which mounts it and describes it in one step, so a route cannot be served without
//! being described. The intake endpoints of every connector kind are described whether
//! or not they are configured ([`ingest::contract::intake_api`]), so the document is the
//! same on every deployment. It is rendered once at start and served as bytes.

use axum::Extension;
use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use ingest::problem::Problem;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder, Tag};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::common::ApiState;

/// The name of the bearer security scheme protected operations refer to.
pub const BEARER: &str = "bearer";

/// The rendered document, handed to the handler as a request extension.
#[derive(Clone)]
pub struct Contract(Bytes);

impl Contract {
    /// Renders `document` once.
    pub fn render(document: &OpenApi) -> Contract {
        // Serialising plain data with string keys cannot fail.
        let json = serde_json::to_vec(document).unwrap_or_else(|_| b"{}".to_vec());
        Contract(Bytes::from(json))
    }
}

/// The contract route (open, no token).
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// This document: every endpoint of the ops API and the intake API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "contract",
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = Object)),
)]
async fn openapi_json(Extension(contract): Extension<Contract>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        contract.0.clone(),
    )
        .into_response()
}

/// Puts the described parts together under leadpipe's name and version, with the bearer
/// scheme the protected operations refer to.
pub fn document(parts: impl IntoIterator<Item = OpenApi>) -> OpenApi {
    let info = InfoBuilder::new()
        .title("leadpipe")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "Catches every sales inquiry and files it, exactly once, as a CRM lead. \
             The intake API (`/v1/intake/...`) takes form posts, signed events and chat and \
             telephony webhooks; an endpoint answers once its connector is configured. Every \
             other `/v1/` path is the ops API and needs `Authorization: Bearer <token>`. Every error is a JSON \
             `Problem`: `{\"error\": code, \"message\": text, \"fields\": [...]}`.",
        ))
        .build();
    let mut api = OpenApiBuilder::new().info(info).build();
    for part in parts {
        api.merge(part);
    }
    let components = api
        .components
        .get_or_insert_with(utoipa::openapi::Components::new);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "`api.admin_token`, or a user's API token (as the people endpoints issue).",
                ))
                .build(),
        ),
    );
    let tags = api.tags.get_or_insert_with(Vec::new);
    tags.extend(
        [
            (
                "intake",
                "Where inquiries arrive: forms, events, chat and telephony webhooks.",
            ),
            ("leads", "Leads, and replies to them."),
            ("clients", "Contacts and companies."),
            ("health", "Liveness, readiness and metrics; open."),
            ("contract", "This document; open."),
        ]
        .into_iter()
        .map(|(name, description)| {
            let mut tag = Tag::new(name);
            tag.description = Some(description.to_owned());
            tag
        }),
    );
    api
}

/// The answer for a path no endpoint serves.
pub(crate) async fn no_route(uri: Uri) -> Problem {
    let path: String = uri.path().chars().take(200).collect();
    Problem::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("there is no endpoint at `{path}`: /openapi.json lists them"),
    )
}

/// The answer for a method a path does not take.
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> Problem {
    let path: String = uri.path().chars().take(200).collect();
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("`{path}` does not take {method}: /openapi.json lists what it takes"),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashSet};
    use std::path::Path;

    use serde_json::Value;

    /// Operations that take no input and so have no client error to document.
    const NO_CLIENT_ERROR: [(&str, &str); 4] = [
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
    ];

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    /// Every (method, path) of a document.
    fn operations(api: &Value) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for (path, item) in api["paths"].as_object().expect("paths") {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    out.push((method.to_owned(), path.clone(), op.clone()));
                }
            }
        }
        out
    }

    fn json(api: utoipa::openapi::OpenApi) -> Value {
        serde_json::to_value(api).expect("the document serialises")
    }

    fn is_problem(response: &Value) -> bool {
        response["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/Problem"
    }

    #[test]
    fn every_operation_documents_its_answers_and_errors() {
        let api = json(super::super::described());
        let protected: HashSet<(String, String)> =
            operations(&json(super::super::protected_routes().into_openapi()))
                .into_iter()
                .map(|(m, p, _)| (m, p))
                .collect();
        assert!(!protected.is_empty());
        let all = operations(&api);
        let mut ids = HashSet::new();
        let mut problems = Vec::new();
        for (method, path, op) in &all {
            let name = format!("{} {path}", method.to_uppercase());
            let responses = op["responses"].as_object().expect("responses");
            let codes: Vec<u16> = responses.keys().filter_map(|c| c.parse().ok()).collect();
            if !codes.iter().any(|c| (200..400).contains(c)) {
                problems.push(format!("{name}: no success answer"));
            }
            let client_errors: Vec<u16> = codes
                .iter()
                .copied()
                .filter(|c| (400..500).contains(c))
                .collect();
            for code in &client_errors {
                if !is_problem(&responses[&code.to_string()]) {
                    problems.push(format!("{name}: {code} is not a Problem body"));
                }
            }
            let exempt = NO_CLIENT_ERROR.contains(&(method.as_str(), path.as_str()));
            if client_errors.is_empty() && !exempt {
                problems.push(format!("{name}: documents no 4xx answer"));
            }
            if !op["operationId"]
                .as_str()
                .is_some_and(|id| ids.insert(id.to_owned()))
            {
                problems.push(format!("{name}: operationId missing or not unique"));
            }
            // Every `{param}` of the path is declared.
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .filter_map(|p| p["name"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            let in_path: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            if declared != in_path {
                problems.push(format!(
                    "{name}: path parameters {declared:?} != {in_path:?}"
                ));
            }
            let secured = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get(super::BEARER).is_some()));
            if protected.contains(&(method.clone(), path.clone())) {
                if !secured {
                    problems.push(format!("{name}: behind the token but no bearer security"));
                }
                if !responses.get("401").is_some_and(is_problem) {
                    problems.push(format!("{name}: behind the token but no 401 Problem"));
                }
            } else if secured {
                problems.push(format!("{name}: open, yet documents bearer security"));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert!(api["components"]["securitySchemes"][super::BEARER]["scheme"] == "bearer");
        assert!(api["components"]["schemas"]["Problem"]["properties"]["error"].is_object());
        assert!(api["components"]["schemas"]["FieldProblem"].is_object());
    }

    #[test]
    fn the_document_names_leadpipe_and_covers_both_apis() {
        let api = json(super::super::described());
        assert_eq!(api["openapi"], "3.1.0");
        assert_eq!(api["info"]["title"], "leadpipe");
        assert_eq!(api["info"]["version"], env!("CARGO_PKG_VERSION"));
        let paths = api["paths"].as_object().expect("paths");
        assert!(paths.keys().any(|p| p.starts_with("/v1/intake/")));
        assert!(paths.keys().any(|p| p.starts_with("/v1/leads")));
        // Every schema a `$ref` points at is in the components.
        let text = api.to_string();
        for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &piece[..piece.find('"').expect("a closing quote")];
            assert!(
                api["components"]["schemas"][name].is_object(),
                "{name} is referred to but not described"
            );
        }
    }

    /// Pieces of code that mount a route without describing it. Built with `concat!` so
    /// that this scanner does not find itself.
    const UNDESCRIBED: [&str; 7] = [
        concat!(".route", "("),
        concat!(".route_service", "("),
        concat!(".nest", "("),
        concat!(".nest_service", "("),
        concat!(".fallback_service", "("),
        concat!("Router::", "from("),
        concat!("OpenApiRouter::", "from("),
    ];

    /// Calls that look alike but mount nothing: the lead router picks a queue. Each is
    /// a file and the receiver of its `.route(&...)` call.
    const NOT_AXUM: [(&str, &str); 2] =
        [("src/pipeline.rs", "self.router"), ("src/cli.rs", "routes")];

    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("a source folder").flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The lines of one file (`relative` to the workspace root) that mount a route
    /// without describing it.
    fn undescribed(relative: &str, text: &str) -> Vec<String> {
        let mut found = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for needle in UNDESCRIBED {
                let allowed = NOT_AXUM.iter().any(|(file, receiver)| {
                    *file == relative && code.contains(&format!("{receiver}{needle}&"))
                });
                if code.contains(needle) && !allowed {
                    found.push(format!("{relative}:{}: {}", number + 1, code));
                }
            }
        }
        found
    }

    /// A route mounted with plain axum (or an `OpenApiRouter` turned into a plain router
    /// before mounting) would be served but missing from `/openapi.json`: every route
    /// must be registered with `utoipa_axum::routes!`.
    #[test]
    fn no_route_is_mounted_around_the_contract() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in [
            "src",
            "ingest/src",
            "normalizer/src",
            "router/src",
            "store/src",
        ] {
            rust_files(&root.join(dir), &mut files);
        }
        assert!(
            files.len() > 20,
            "the sources were not found under {root:?}"
        );
        let mut found = Vec::new();
        for file in &files {
            let relative = file
                .strip_prefix(root)
                .expect("under the root")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(file).expect("a readable source file");
            found.extend(undescribed(&relative, &text));
        }
        assert!(
            found.is_empty(),
            "routes mounted without a description (register handlers with utoipa_axum::routes! \
             in an OpenApiRouter and merge it in src/api/mod.rs or the connector's router):\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn the_scan_finds_plain_axum_mounting_and_passes_over_the_lead_router() {
        let route = UNDESCRIBED[0];
        let from = UNDESCRIBED[5];
        let source = format!(
            "fn routes() -> Router {{\n    Router::new(){route}\"/v1/x\", get(x))\n}}\n\
             // Router::new(){route}\"/in/a/comment\", get(x))\n\
             let app = app.merge(axum::{from}people::routes()));\n\
             let r = self.router{route}&lead);\n"
        );
        let found = undescribed("src/pipeline.rs", &source);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("src/pipeline.rs:2:"));
        assert!(found[1].starts_with("src/pipeline.rs:5:"));
        // The lead router's call is allowed only where it is.
        assert_eq!(undescribed("src/other.rs", &source).len(), 3);
    }
}
