//! Hostile and broken input: every refusal is a 4xx with a JSON body naming the problem,
//! never a 500, and a broker that cannot confirm is a 503 with Retry-After.

use std::time::Duration;

use crate::support::{Options, TestDaemon, temp_file};

const URLENCODED: &str = "application/x-www-form-urlencoded";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_and_a_json_error_naming_the_problem() {
    let daemon = TestDaemon::start().await;
    let ok_body = "name=Ida+Rowe&email=ida.rowe%40example.com";

    daemon
        .post_form("no-such-form", Some(URLENCODED), ok_body, &[])
        .await
        .assert_error(404, "unknown_form");
    daemon
        .post_form("en-contact", Some(URLENCODED), vec![b'x'; 65_537], &[])
        .await
        .assert_error(413, "body_too_large");
    daemon
        .post_form("en-contact", None, ok_body, &[])
        .await
        .assert_error(415, "unsupported_content_type");
    daemon
        .post_form("en-contact", Some("text/plain"), ok_body, &[])
        .await
        .assert_error(415, "unsupported_content_type");
    daemon
        .post_form("en-contact", Some("application/json"), "{\"email\":", &[])
        .await
        .assert_error(400, "malformed_body");
    daemon
        .post_form("en-contact", Some("multipart/form-data"), "--x\r\n", &[])
        .await
        .assert_error(400, "malformed_body");
    daemon
        .post_form(
            "en-contact",
            Some(URLENCODED),
            "name=Ida&email=&phone=",
            &[],
        )
        .await
        .assert_error(422, "no_contact");
    daemon
        .post_form(
            "en-contact",
            Some(URLENCODED),
            ok_body,
            &[("Idempotency-Key", "")],
        )
        .await
        .assert_error(400, "invalid_idempotency_key");

    // Exactly at the limit is fine.
    let pad = 65_536 - "email=ida.limit%40example.com&message=".len();
    let at_limit = format!("email=ida.limit%40example.com&message={}", "a".repeat(pad));
    assert_eq!(at_limit.len(), 65_536);
    let r = daemon
        .post_form("en-contact", Some(URLENCODED), at_limit, &[])
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_forms_refuse_missing_and_wrong_signatures() {
    let secret_path = temp_file("form.secret", b"s3cret-for-tests\n");
    let daemon = TestDaemon::start_with(Options {
        extra_config: format!(
            "[[forms]]\nname = \"signed\"\nsource = \"partner\"\ndefault_region = \"IT\"\nsecret_file = \"{}\"\n",
            secret_path.display()
        ),
        ..Options::default()
    })
    .await;
    let body = "email=firmato%40example.it&nome=Firmato";
    daemon
        .post_form("signed", Some(URLENCODED), body, &[])
        .await
        .assert_error(401, "bad_signature");
    let wrong = ingest::forms::signature::sign(b"another-secret", body.as_bytes());
    daemon
        .post_form(
            "signed",
            Some(URLENCODED),
            body,
            &[("x-leadpipe-signature", &wrong)],
        )
        .await
        .assert_error(401, "bad_signature");
    let right = ingest::forms::signature::sign(b"s3cret-for-tests", body.as_bytes());
    let r = daemon
        .post_form(
            "signed",
            Some(URLENCODED),
            body,
            &[("x-leadpipe-signature", &right)],
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let _ = std::fs::remove_file(secret_path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_listed_origins_and_refuses_others() {
    let daemon = TestDaemon::start_with(Options {
        extra_config: "[[forms]]\nname = \"site\"\nsource = \"site\"\ndefault_region = \"PL\"\n\
                       allowed_origins = [\"https://www.example.pl\"]\nredirect = \"https://www.example.pl/dziekujemy\"\n"
            .into(),
        ..Options::default()
    })
    .await;
    let preflight = daemon
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/intake/forms/site", daemon.base),
        )
        .header("origin", "https://www.example.pl")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://www.example.pl"
    );
    let body = "imie=Ola&email=ola%40example.pl";
    let allowed = daemon
        .post_form(
            "site",
            Some(URLENCODED),
            body,
            &[("origin", "https://www.example.pl")],
        )
        .await;
    assert_eq!(allowed.status, 202, "{}", allowed.text());
    assert_eq!(
        allowed.headers["access-control-allow-origin"],
        "https://www.example.pl"
    );
    daemon
        .post_form(
            "site",
            Some(URLENCODED),
            body,
            &[("origin", "https://evil.example.com")],
        )
        .await
        .assert_error(403, "origin_not_allowed");

    // A plain HTML post is redirected to the thank-you page.
    let html = daemon
        .post_form(
            "site",
            Some(URLENCODED),
            "imie=Ola&email=ola2%40example.pl",
            &[("accept", "text/html,application/xhtml+xml")],
        )
        .await;
    assert_eq!(html.status, 303);
    assert_eq!(
        html.headers["location"],
        "https://www.example.pl/dziekujemy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_an_error_while_the_example_admin_token_is_in_use() {
    let mut daemon = TestDaemon::start().await;
    daemon.kill();
    daemon.env.push((
        "LEADPIPE__API__ADMIN_TOKEN".into(),
        "change-me-please".into(),
    ));
    daemon.launch(true).await;
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("example admin token")),
        "an ERROR about the example token:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_timestamps_bound_replays_to_the_tolerance_window() {
    let secret = "s3cret-with-time";
    let daemon = TestDaemon::start_with(Options {
        extra_config: format!(
            "[[forms]]\nname = \"timed\"\nsource = \"partner-timed\"\ndefault_region = \"IT\"\nsecret = \"{secret}\"\n\
             signature_timestamp = \"required\"\nsignature_tolerance_secs = 300\n\n\
             [[forms]]\nname = \"optional\"\nsource = \"partner-optional\"\ndefault_region = \"IT\"\nsecret = \"{secret}\"\n"
        ),
        ..Options::default()
    })
    .await;
    let now = chrono::Utc::now().timestamp();
    let body = "email=tempo%40example.it&nome=Tempo";
    let sign_at =
        |ts: i64| ingest::forms::signature::sign_at(secret.as_bytes(), ts, body.as_bytes());
    let post = |form: &'static str, ts: Option<String>, sig: String, key: &'static str| {
        let daemon = &daemon;
        async move {
            let mut headers = vec![("x-leadpipe-signature", sig.clone())];
            if let Some(ts) = ts {
                headers.push(("x-leadpipe-timestamp", ts));
            }
            headers.push(("idempotency-key", key.to_owned()));
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            daemon
                .post_form(form, Some(URLENCODED), body, &headers)
                .await
        }
    };
    let body_only = ingest::forms::signature::sign(secret.as_bytes(), body.as_bytes());

    // Required: a body-only signature is not enough.
    post("timed", None, body_only.clone(), "k1")
        .await
        .assert_error(401, "bad_signature");
    // Outside the window on either side, even with a valid signature.
    for ts in [now - 400, now + 400] {
        let r = post("timed", Some(ts.to_string()), sign_at(ts), "k2").await;
        r.assert_error(401, "timestamp_outside_window");
        assert!(
            r.json()["message"].as_str().unwrap().contains("300"),
            "{}",
            r.text()
        );
    }
    // A timestamp that was not signed (a captured body-only signature with a new time).
    post("timed", Some(now.to_string()), body_only.clone(), "k3")
        .await
        .assert_error(401, "bad_signature");
    post("timed", Some("yesterday".into()), sign_at(now), "k4")
        .await
        .assert_error(401, "bad_signature");
    let first = post("timed", Some(now.to_string()), sign_at(now), "k5").await;
    assert_eq!(first.status, 202, "{}", first.text());
    // Replayed inside the window under a fresh key: the same content, a duplicate.
    let replay = post("timed", Some(now.to_string()), sign_at(now), "k6").await;
    assert_eq!(replay.status, 202, "{}", replay.text());

    // Optional: body-only signatures keep working, timestamped ones are checked.
    let plain = post("optional", None, body_only, "k7").await;
    assert_eq!(plain.status, 202, "{}", plain.text());
    post(
        "optional",
        Some((now - 400).to_string()),
        sign_at(now - 400),
        "k8",
    )
    .await
    .assert_error(401, "timestamp_outside_window");

    daemon.wait_for_inquiries(3, Duration::from_secs(30)).await;
    let pool = daemon.db().await;
    let timed: Vec<String> = sqlx::query_scalar(
        "SELECT disposition FROM inquiries WHERE source = 'partner-timed' ORDER BY received_at",
    )
    .fetch_all(&pool)
    .await
    .expect("dispositions");
    assert_eq!(timed, ["lead", "duplicate"], "{}", daemon.log());
    pool.close().await;
}

/// A JSON body whose custom field `deep` nests `depth` levels in all, sent twice (a
/// repeated name becomes an array: one level more on the way to the consumer).
fn nested_json_body(email: &str, depth: usize) -> String {
    let inner = depth - 1;
    let deep = format!("{}1{}", "[".repeat(inner), "]".repeat(inner));
    format!(r#"{{"email":"{email}","deep":{deep},"deep":{deep}}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_nested_past_the_limit_is_refused_and_the_deepest_accepted_body_is_filed() {
    let daemon = TestDaemon::start().await;
    let limit = ingest::forms::body::MAX_JSON_DEPTH;
    let too_deep = daemon
        .post_form(
            "en-contact",
            Some("application/json"),
            nested_json_body("too.deep@example.com", limit + 1),
            &[],
        )
        .await;
    too_deep.assert_error(400, "too_deep");
    assert!(
        too_deep.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains(&limit.to_string())),
        "the message names the limit: {}",
        too_deep.text()
    );

    let deepest = daemon
        .post_form(
            "en-contact",
            Some("application/json"),
            nested_json_body("deepest@example.com", limit),
            &[],
        )
        .await;
    assert_eq!(deepest.status, 202, "{}", deepest.text());
    let leads = daemon
        .wait_for_leads("email=deepest%40example.com", 1, Duration::from_secs(30))
        .await;
    assert_eq!(leads.len(), 1, "the consumer filed it\n{}", daemon.log());
    let metrics = daemon.get("/metrics").await.text();
    assert!(
        !metrics.contains("leadpipe_dead_lettered_total{"),
        "nothing was dead-lettered:\n{metrics}"
    );
}

/// A small deterministic generator, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
    fn text(&mut self, max: usize) -> String {
        const PIECES: &[&str] = &[
            "a", "Ż", "ễ", "%", "%2", "%ZZ", "%F0%9F", "+", "&", "=", "@", "\0", "\r\n", "{", "\"",
            "ext.", "00", "+39", "0", "9", " ", "é", "\u{202e}", "<script>", "'", ";", "📞",
        ];
        (0..self.below(max + 1))
            .map(|_| PIECES[self.below(PIECES.len())])
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_and_random_fields_never_cause_a_server_error() {
    let daemon = TestDaemon::start().await;
    let mut rng = Rng(0x5eed_1ead_91be_0001);
    let types = [
        Some("application/x-www-form-urlencoded"),
        Some("application/json"),
        Some("multipart/form-data; boundary=XyZ"),
        Some("multipart/form-data"),
        Some("application/json; charset=latin1"),
        Some("text/plain"),
        Some("application/x-www-form-urlencoded; charset=\"utf-8"),
        Some(";;;"),
        None,
    ];
    let names = [
        "email",
        "e-mail",
        "phone",
        "tel",
        "name",
        "nome",
        "cognome",
        "company",
        "message",
        "website",
        "utm_source",
        "x",
        "",
        "so_dien_thoai",
        "Email*",
    ];
    let forms = ["en-contact", "it-contatti", "pl-kontakt", "vn-lien-he"];
    let mut seen = std::collections::BTreeMap::new();
    for round in 0..300 {
        let content_type = types[rng.below(types.len())];
        let body: Vec<u8> = match round % 3 {
            0 => rng.bytes(600),
            1 => {
                // Random field sets, urlencoded-ish.
                let n = rng.below(8);
                (0..n)
                    .map(|_| format!("{}={}", names[rng.below(names.len())], rng.text(12)))
                    .collect::<Vec<_>>()
                    .join("&")
                    .into_bytes()
            }
            _ => {
                // Random field sets as JSON of random shapes.
                let mut map = serde_json::Map::new();
                for _ in 0..rng.below(8) {
                    let value = match rng.below(5) {
                        0 => serde_json::json!(rng.text(12)),
                        1 => serde_json::json!(rng.next() as i64),
                        2 => serde_json::json!([rng.text(4), null, true]),
                        3 => serde_json::json!({"nested": rng.text(3)}),
                        _ => serde_json::Value::Null,
                    };
                    map.insert(names[rng.below(names.len())].to_owned(), value);
                }
                serde_json::to_vec(&map).unwrap()
            }
        };
        let form = forms[rng.below(forms.len())];
        let r = daemon
            .post_form(form, content_type, body.clone(), &[])
            .await;
        assert!(
            matches!(r.status, 202 | 400 | 413 | 415 | 422),
            "round {round}: {} for {content_type:?} {:?}: {}",
            r.status,
            String::from_utf8_lossy(&body),
            r.text()
        );
        if r.status != 202 {
            let json = r.json();
            assert!(json["error"].is_string() && json["message"].is_string());
        }
        *seen.entry(r.status).or_insert(0) += 1;
    }
    assert!(
        seen.len() >= 3,
        "the inputs reach several outcomes: {seen:?}"
    );
    // Everything accepted is stored (hostile bytes included), and the daemon is healthy.
    let accepted = *seen.get(&202).unwrap_or(&0);
    let stored = daemon
        .wait_for_inquiries(accepted, Duration::from_secs(60))
        .await;
    assert!(
        stored >= accepted,
        "{stored} stored of {accepted} accepted\n{}",
        daemon.log()
    );
    let metrics = daemon.get("/metrics").await.text();
    assert!(
        !metrics.contains("leadpipe_dead_lettered_total{"),
        "nothing accepted was dead-lettered:\n{metrics}"
    );
    assert_eq!(daemon.get("/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_or_database_gives_a_plain_503_and_readyz_says_so() {
    // Without a spool: with one, intake keeps answering 202 (tests/e2e/spool.rs).
    let mut daemon = TestDaemon::start_with(Options {
        extra_config: "[spool]\nenabled = false\n".into(),
        amqp_url: Some("amqp://guest:guest@127.0.0.1:1/%2f".into()),
        no_wait_ready: true,
        ..Options::default()
    })
    .await;
    let r = daemon
        .post_form(
            "en-contact",
            Some(URLENCODED),
            "name=Lou&email=lou%40example.com",
            &[],
        )
        .await;
    r.assert_error(503, "unavailable");
    assert!(r.headers.contains_key("retry-after"));
    // Library error text stays in the log; the client gets a sentence.
    assert_eq!(
        r.json()["message"],
        "the message broker did not confirm the inquiry; nothing was stored, retry later"
    );
    let ready = daemon.get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["broker"], "down");

    // The database goes away too: nothing answers on port 1.
    daemon.kill();
    daemon.env.push((
        "LEADPIPE__DATABASE__URL".into(),
        "postgres://postgres@127.0.0.1:1/leadpipe".into(),
    ));
    daemon.launch(false).await;
    let leads = daemon.get("/v1/leads").await;
    leads.assert_error(503, "database_unavailable");
    assert_eq!(
        leads.json()["message"],
        "the database did not answer; retry later"
    );
    assert!(leads.headers.contains_key("retry-after"));
    let ready = daemon.get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(
        ready.json(),
        serde_json::json!({"status": "not_ready", "broker": "down", "database": "down"})
    );
    let r = daemon
        .post_form(
            "en-contact",
            Some(URLENCODED),
            "name=Lou&email=lou%40example.com",
            &[],
        )
        .await;
    r.assert_error(503, "unavailable");
    let log = daemon.log();
    assert!(
        log.contains("Publishing failed") && log.contains("Reading from the database failed"),
        "the details are logged:\n{log}"
    );
}
