//! Working a lead over HTTP: pipelines and stages, moves with history, reopening,
//! finishing as converted or junk, deals, and the next inquiry of a converted person.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Options, Response, TestDaemon, check_config};

const URLENCODED: &str = "application/x-www-form-urlencoded";
const WAIT: Duration = Duration::from_secs(20);

/// A request with the admin token and an optional JSON body.
async fn send(daemon: &TestDaemon, method: &str, path: &str, body: Option<Value>) -> Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = daemon
        .http
        .request(method, format!("{}{path}", daemon.base))
        .bearer_auth(&daemon.admin);
    if let Some(body) = body {
        request = request.json(&body);
    }
    Response::read(request.send().await.expect("the daemon answers")).await
}

/// Posts an English contact form and waits for its lead; returns the lead id.
async fn lead_from(daemon: &TestDaemon, name: &str, email: &str, company: &str) -> i64 {
    let before = daemon.leads("").await.len();
    let body = format!(
        "name={}&email={}&company={}&message=Please+call+me",
        name.replace(' ', "+"),
        email.replace('@', "%40"),
        company.replace(' ', "+")
    );
    let answer = daemon
        .post_form("en-contact", Some(URLENCODED), body, &[])
        .await;
    assert!(answer.status < 300, "{}", answer.text());
    let leads = daemon.wait_for_leads("", before + 1, WAIT).await;
    assert_eq!(leads.len(), before + 1, "the inquiry became a lead");
    leads
        .iter()
        .find(|l| l["email"] == email)
        .map(|l| l["id"].as_i64().unwrap())
        .unwrap_or_else(|| panic!("a lead for {email}: {leads:?}"))
}

async fn lead(daemon: &TestDaemon, id: i64) -> Value {
    let answer = daemon.get(&format!("/v1/leads/{id}")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_are_recorded_finished_leads_refused_and_reopening_is_recorded() {
    let daemon = TestDaemon::start().await;
    let id = lead_from(&daemon, "Ada Byron", "ada@analytical.example.com", "").await;

    let moved = daemon
        .post_json(
            &format!("/v1/leads/{id}/stage"),
            json!({"stage": "working", "reason": "first call done"}),
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.text());
    let lead_now = lead(&daemon, id).await;
    assert_eq!(lead_now["stage"]["code"], "working");
    let last = lead_now["stage_history"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(last["from"], "open");
    assert_eq!(last["to"], "working");
    assert_eq!(last["changed_by"], "admin");
    assert_eq!(last["reason"], "first call done");

    for (body, status, code) in [
        (json!({"stage": "qualified"}), 409, "use_finish"),
        (json!({"stage": "won"}), 422, "stage_of_another_pipeline"),
        (json!({"stage": "no_such"}), 422, "unknown_stage"),
        (json!({"stage": "working"}), 409, "same_stage"),
        (json!({"stage": 7}), 400, "bad_body"),
        (json!({"stage": "open", "extra": 1}), 400, "bad_body"),
    ] {
        daemon
            .post_json(&format!("/v1/leads/{id}/stage"), body)
            .await
            .assert_error(status, code);
    }
    daemon
        .post_json("/v1/leads/999999/stage", json!({"stage": "open"}))
        .await
        .assert_error(404, "not_found");

    let junk = daemon
        .post_json(
            &format!("/v1/leads/{id}/finish"),
            json!({"outcome": "junk", "reason": "no_budget", "note": "maybe next year"}),
        )
        .await;
    assert_eq!(junk.status, 200, "{}", junk.text());
    let refused = daemon
        .post_json(
            &format!("/v1/leads/{id}/stage"),
            json!({"stage": "working"}),
        )
        .await;
    refused.assert_error(409, "lead_finished");
    assert!(
        refused.json()["message"]
            .as_str()
            .unwrap()
            .contains("reopen")
    );

    let reopened = daemon
        .post_json(
            &format!("/v1/leads/{id}/reopen"),
            json!({"stage": "working", "reason": "they found a budget"}),
        )
        .await;
    assert_eq!(reopened.status, 200, "{}", reopened.text());
    let lead_now = lead(&daemon, id).await;
    assert_eq!(lead_now["stage"]["code"], "working");
    let last = lead_now["stage_history"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(
        (&last["from"], &last["to"]),
        (&json!("junk"), &json!("working"))
    );
    assert!(
        lead_now["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "reopened" && e["data"]["reason"] == "they found a budget"),
        "{}",
        lead_now["events"]
    );
    let db = daemon.db().await;
    let (closed, reason): (Option<chrono::DateTime<chrono::Utc>>, Option<String>) =
        sqlx::query_as("SELECT closed_at, junk_reason FROM leads WHERE id = $1")
            .bind(id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(closed.is_none() && reason.is_none());
    daemon
        .post_json(&format!("/v1/leads/{id}/reopen"), json!({"stage": "open"}))
        .await
        .assert_error(409, "lead_not_finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_holding_leads_is_not_removed_and_renaming_keeps_history() {
    let daemon = TestDaemon::start().await;
    let id = lead_from(&daemon, "Grace Hopper", "grace@cobol.example.com", "").await;
    let moved = daemon
        .post_json(
            &format!("/v1/leads/{id}/stage"),
            json!({"stage": "attempting_contact"}),
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.text());

    let refused = send(
        &daemon,
        "DELETE",
        "/v1/pipelines/default/stages/attempting_contact",
        None,
    )
    .await;
    refused.assert_error(409, "stage_in_use");
    assert!(
        refused.json()["message"]
            .as_str()
            .unwrap()
            .contains("1 lead"),
        "{}",
        refused.text()
    );

    let renamed = send(
        &daemon,
        "PATCH",
        "/v1/pipelines/default/stages/attempting_contact",
        Some(json!({"name": "Trying to reach", "colour": "#00aa00", "deadline_days": 2})),
    )
    .await;
    assert_eq!(renamed.status, 200, "{}", renamed.text());
    assert_eq!(renamed.json()["color"], "#00AA00");
    let lead_now = lead(&daemon, id).await;
    assert_eq!(lead_now["stage"]["name"], "Trying to reach");
    let last = lead_now["stage_history"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(last["to"], "attempting_contact", "history keeps the stage");

    send(
        &daemon,
        "PATCH",
        "/v1/pipelines/default/stages/attempting_contact",
        Some(json!({"colour": "green"})),
    )
    .await
    .assert_error(422, "invalid_fields");

    // Moved out, the stage can go; it stays listed for history, marked removed.
    daemon
        .post_json(
            &format!("/v1/leads/{id}/stage"),
            json!({"stage": "working"}),
        )
        .await;
    let removed = send(
        &daemon,
        "DELETE",
        "/v1/pipelines/default/stages/attempting_contact",
        None,
    )
    .await;
    assert_eq!(removed.status, 200, "{}", removed.text());
    daemon
        .post_json(
            &format!("/v1/leads/{id}/stage"),
            json!({"stage": "attempting_contact"}),
        )
        .await
        .assert_error(422, "stage_removed");

    // A new stage, put first; an inactive stage takes no leads.
    let added = daemon
        .post_json(
            "/v1/pipelines/default/stages",
            json!({"code": "demo", "name": "Demo booked", "color": "#9C27B0", "semantic": "open", "active": false}),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.text());
    daemon
        .post_json(&format!("/v1/leads/{id}/stage"), json!({"stage": "demo"}))
        .await
        .assert_error(422, "stage_inactive");
    daemon
        .post_json(
            "/v1/pipelines/default/stages",
            json!({"code": "demo2", "name": "Demo", "color": "#9C27B0", "semantic": "open", "intial": true}),
        )
        .await
        .assert_error(400, "bad_body");
    daemon
        .post_json(
            "/v1/pipelines",
            json!({"code": "partners", "name": "Partners", "stages": [
                {"code": "new", "name": "New", "color": "#2196F3", "semantic": "open"}
            ]}),
        )
        .await
        .assert_error(422, "invalid_fields");
    let created = daemon
        .post_json(
            "/v1/pipelines",
            json!({"code": "partners", "name": "Partners", "stages": [
                {"code": "new", "name": "New", "color": "#2196F3", "semantic": "open", "initial": true},
                {"code": "signed", "name": "Signed", "color": "#4CAF50", "semantic": "success"}
            ]}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    daemon
        .post_json(&format!("/v1/leads/{id}/stage"), json!({"stage": "signed"}))
        .await
        .assert_error(422, "stage_of_another_pipeline");
    let pipelines = daemon.get("/v1/pipelines").await.json();
    let default = pipelines
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["code"] == "default")
        .unwrap();
    let mut codes: Vec<String> = default["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["removed_at"].is_null())
        .map(|s| s["code"].as_str().unwrap().to_owned())
        .collect();
    codes.retain(|c| c != "demo");
    codes.insert(0, "demo".into());
    let reordered = send(
        &daemon,
        "PUT",
        "/v1/pipelines/default/order",
        Some(json!({"stages": codes})),
    )
    .await;
    assert_eq!(reordered.status, 200, "{}", reordered.text());
    assert_eq!(reordered.json()["stages"][0]["code"], "demo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversions_make_each_client_once_and_the_next_inquiry_is_a_repeat() {
    let daemon = TestDaemon::start().await;
    let first = lead_from(
        &daemon,
        "Linus Berg",
        "linus@berg-tools.example.com",
        "Berg Tools",
    )
    .await;
    // A colleague writes in before the first lead is converted.
    let colleague = lead_from(
        &daemon,
        "Maja Berg",
        "maja@berg-tools.example.com",
        "Berg Tools Ltd",
    )
    .await;

    let converted = daemon
        .post_json(
            &format!("/v1/leads/{first}/finish"),
            json!({"outcome": "converted", "create": [
                {"type": "contact"}, {"type": "company"},
                {"type": "deal", "title": "Tooling", "amount": 2500.5, "currency": "eur"}
            ]}),
        )
        .await;
    assert_eq!(converted.status, 200, "{}", converted.text());
    let converted = converted.json();
    assert_eq!(converted["contact"]["result"], "created");
    assert_eq!(converted["company"]["result"], "created");
    assert_eq!(converted["deal"]["amount"], "2500.50");
    assert_eq!(converted["deal"]["currency"], "EUR");
    assert_eq!(converted["deal"]["stage"], "new");
    assert_eq!(converted["move"]["to"], "qualified");
    let contact_id = converted["contact"]["id"].as_i64().unwrap();
    let company_id = converted["company"]["id"].as_i64().unwrap();
    let lead_now = lead(&daemon, first).await;
    assert_eq!(lead_now["client"]["contact_id"], contact_id);
    assert_eq!(lead_now["client"]["company_id"], company_id);

    // The colleague's firm is known by now: linked, never a second company.
    let second = daemon
        .post_json(
            &format!("/v1/leads/{colleague}/finish"),
            json!({"outcome": "converted", "create": [{"type": "company"}, {"type": "contact"}]}),
        )
        .await;
    assert_eq!(second.status, 200, "{}", second.text());
    let second = second.json();
    assert_eq!(second["company"]["result"], "linked_existing");
    assert_eq!(second["company"]["id"], company_id);
    assert_eq!(second["contact"]["result"], "created");

    // Linus writes again: a repeat lead of his contact, which converts to a deal only.
    let before = daemon.leads("").await.len();
    let answer = daemon
        .post_form(
            "en-contact",
            Some(URLENCODED),
            "name=Linus+Berg&email=LINUS%40berg-tools.example.com&message=More+tools+please",
            &[],
        )
        .await;
    assert!(answer.status < 300, "{}", answer.text());
    let leads = daemon.wait_for_leads("", before + 1, WAIT).await;
    let repeat = leads
        .iter()
        .find(|l| l["email"] == "linus@berg-tools.example.com" && l["id"] != first)
        .cloned()
        .unwrap_or_else(|| panic!("a new lead for Linus: {leads:?}"));
    assert_eq!(repeat["is_repeat"], true, "{repeat}");
    assert_eq!(repeat["client"]["contact_id"], contact_id, "{repeat}");
    let repeat_id = repeat["id"].as_i64().unwrap();
    daemon
        .post_json(
            &format!("/v1/leads/{repeat_id}/finish"),
            json!({"outcome": "converted", "create": [{"type": "contact"}, {"type": "deal"}]}),
        )
        .await
        .assert_error(409, "repeat_lead");
    let deal_only = daemon
        .post_json(
            &format!("/v1/leads/{repeat_id}/finish"),
            json!({"outcome": "converted", "create": [{"type": "deal", "amount": "99", "currency": "USD"}]}),
        )
        .await;
    assert_eq!(deal_only.status, 200, "{}", deal_only.text());
    let deal_only = deal_only.json();
    assert_eq!(deal_only["contact"]["result"], "existing_client");
    assert_eq!(deal_only["deal"]["contact_id"], contact_id);
    assert_eq!(
        deal_only["deal"]["title"], repeat["title"],
        "the lead's title"
    );

    let db = daemon.db().await;
    let contacts: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts")
        .fetch_one(&db)
        .await
        .unwrap();
    let companies: i64 = sqlx::query_scalar("SELECT count(*) FROM companies")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!((contacts, companies), (2, 1), "no ghost clients");

    let deals = daemon.get("/v1/deals").await;
    assert_eq!(deals.status, 200, "{}", deals.text());
    assert_eq!(deals.json()["items"].as_array().unwrap().len(), 2);
    let deal_id = deal_only["deal"]["id"].as_i64().unwrap();
    let one = daemon.get(&format!("/v1/deals/{deal_id}")).await;
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.json()["lead_id"], repeat_id);
    daemon
        .get("/v1/deals/424242")
        .await
        .assert_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_person_is_linked_and_bad_conversions_are_refused_with_the_field() {
    let daemon = TestDaemon::start().await;
    let id = lead_from(&daemon, "Rosa Lind", "rosa@lind.example.org", "").await;
    // The person becomes known after the lead was filed (added by hand, say).
    let contact = daemon
        .post_json(
            "/v1/contacts",
            json!({"name": "Rosa Lind", "emails": ["rosa@lind.example.org"]}),
        )
        .await;
    assert_eq!(contact.status, 201, "{}", contact.text());
    let contact_id = contact.json()["id"].as_i64().unwrap();

    for (body, status, code) in [
        (json!({"outcome": "won"}), 422, "invalid_fields"),
        (
            json!({"outcome": "converted", "create": [{"type": "robot"}]}),
            400,
            "bad_body",
        ),
        (
            json!({"outcome": "converted", "create": [{"type": "deal", "amount": "-5", "currency": "EUR"}]}),
            422,
            "invalid_fields",
        ),
        (
            json!({"outcome": "converted", "create": [{"type": "deal", "amount": "5", "currency": "euro"}]}),
            422,
            "invalid_fields",
        ),
        (
            json!({"outcome": "converted", "create": [{"type": "contact"}, {"link": {"contact_id": 1}}]}),
            422,
            "invalid_fields",
        ),
        (
            json!({"outcome": "converted", "create": [{"link": {"company_id": 777}}]}),
            422,
            "unknown_company",
        ),
        (
            json!({"outcome": "converted", "create": [{"type": "company"}]}),
            422,
            "company_name_missing",
        ),
        (
            json!({"outcome": "junk", "reason": "boring"}),
            422,
            "unknown_junk_reason",
        ),
    ] {
        daemon
            .post_json(&format!("/v1/leads/{id}/finish"), body.clone())
            .await
            .assert_error(status, code);
    }
    let unknown = daemon
        .post_json(
            &format!("/v1/leads/{id}/finish"),
            json!({"outcome": "junk", "reason": "boring"}),
        )
        .await;
    assert!(
        unknown.json()["message"].as_str().unwrap().contains("spam"),
        "lists the reasons: {}",
        unknown.text()
    );

    let converted = daemon
        .post_json(
            &format!("/v1/leads/{id}/finish"),
            json!({"outcome": "converted", "create": [{"type": "contact"}, {"type": "deal"}]}),
        )
        .await;
    assert_eq!(converted.status, 200, "{}", converted.text());
    let converted = converted.json();
    assert_eq!(converted["contact"]["result"], "linked_existing");
    assert_eq!(converted["contact"]["id"], contact_id);
    let db = daemon.db().await;
    let contacts: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(contacts, 1, "no ghost contact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_pipelines_and_junk_reasons_are_applied_at_start() {
    let daemon = TestDaemon::start_with(Options {
        extra_config: r##"
[leads]
junk_reasons = ["spam", "competitor"]

[[pipelines]]
code = "default"
name = "Inbound"
kind = "lead"
[[pipelines.stages]]
code = "open"
name = "Fresh"
colour = "#2196F3"
semantic = "open"
deadline_days = 1
initial = true
[[pipelines.stages]]
code = "qualified"
name = "Won"
colour = "#4CAF50"
semantic = "success"
[[pipelines.stages]]
code = "junk"
name = "Junk"
colour = "#F44336"
semantic = "failure"
"##
        .into(),
        ..Options::default()
    })
    .await;
    // Wait for the sync, which runs once the schema is ready.
    let deadline = std::time::Instant::now() + WAIT;
    let default = loop {
        let pipelines = daemon.get("/v1/pipelines").await.json();
        let default = pipelines
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["code"] == "default")
            .cloned()
            .unwrap();
        if default["name"] == "Inbound" || std::time::Instant::now() > deadline {
            break default;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(default["name"], "Inbound");
    let stage = |code: &str| {
        default["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["code"] == code)
            .cloned()
            .unwrap()
    };
    assert_eq!(stage("open")["name"], "Fresh");
    assert!(
        stage("working")["removed_at"].is_string(),
        "empty and unlisted: removed"
    );

    let id = lead_from(&daemon, "Otto Kern", "otto@kern.example.de", "").await;
    daemon
        .post_json(
            &format!("/v1/leads/{id}/finish"),
            json!({"outcome": "junk", "reason": "no_budget"}),
        )
        .await
        .assert_error(422, "unknown_junk_reason");
    let junk = daemon
        .post_json(
            &format!("/v1/leads/{id}/finish"),
            json!({"outcome": "junk", "reason": "competitor"}),
        )
        .await;
    assert_eq!(junk.status, 200, "{}", junk.text());
    let db = daemon.db().await;
    let reason: Option<String> = sqlx::query_scalar("SELECT junk_reason FROM leads WHERE id = $1")
        .bind(id)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(reason.as_deref(), Some("competitor"));
}

#[test]
fn check_config_names_each_pipeline_problem() {
    let (ok, text) = check_config(
        r##"
[leads]
junk_reasons = ["Spam!"]

[[pipelines]]
code = "deals2"
name = "More deals"
kind = "deal"
[[pipelines.stages]]
code = "new"
name = "New"
colour = "blue"
semantic = "open"
[[pipelines.stages]]
code = "new"
name = "Done"
colour = "#00FF00"
semantic = "finished"
"##,
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("semantic") || text.contains("finished"),
        "{text}"
    );

    let (ok, text) = check_config(
        r##"
[leads]
junk_reasons = ["Spam!"]

[[pipelines]]
code = "deals2"
name = "More deals"
kind = "deal"
[[pipelines.stages]]
code = "new"
name = "New"
colour = "blue"
semantic = "open"
[[pipelines.stages]]
code = "new"
name = "Done"
colour = "#00FF00"
semantic = "success"
"##,
    );
    assert!(!ok, "{text}");
    for needle in [
        "pipelines[0].stages[0].color",
        "pipelines[0].stages[1].code",
        "exactly one stage",
        "leads.junk_reasons[0]",
    ] {
        assert!(text.contains(needle), "names {needle}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_conversions_at_once_of_one_new_firm_make_one_company() {
    let daemon = TestDaemon::start().await;
    let mut leads = Vec::new();
    for (name, email) in [
        ("Eva Holm", "eva@holm-bygg.example.se"),
        ("Nils Holm", "nils@holm-bygg.example.se"),
        ("Ida Holm", "ida@holm-bygg.example.se"),
    ] {
        leads.push(lead_from(&daemon, name, email, "Holm Bygg AB").await);
    }
    let finish = |id: i64| {
        let daemon = &daemon;
        async move {
            daemon
                .post_json(
                    &format!("/v1/leads/{id}/finish"),
                    json!({"outcome": "converted", "create": [
                        {"type": "company"}, {"type": "contact"}, {"type": "deal"}
                    ]}),
                )
                .await
        }
    };
    let (a, b, c) = tokio::join!(finish(leads[0]), finish(leads[1]), finish(leads[2]));
    let mut results: Vec<String> = Vec::new();
    let mut companies = std::collections::BTreeSet::new();
    for answer in [a, b, c] {
        assert_eq!(answer.status, 200, "{}", answer.text());
        let json = answer.json();
        results.push(json["company"]["result"].as_str().unwrap().to_owned());
        companies.insert(json["company"]["id"].as_i64().unwrap());
        assert_eq!(json["contact"]["result"], "created");
    }
    results.sort();
    assert_eq!(results, ["created", "linked_existing", "linked_existing"]);
    assert_eq!(companies.len(), 1, "one firm, one company");
    let db = daemon.db().await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM companies")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(stored, 1);
}
