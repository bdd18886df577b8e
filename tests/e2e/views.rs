//! Finding and working leads: filters, text search, sorts with cursor pages, the kanban
//! board, editing a lead, and bulk assignment and stage changes.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::{Response, TestDaemon};

const URLENCODED: &str = "application/x-www-form-urlencoded";

/// Posts each (form, body) and waits until the daemon filed that many leads.
async fn file_leads(daemon: &TestDaemon, posts: &[(&str, &str)]) -> Vec<Value> {
    for (form, body) in posts {
        let r = daemon
            .post_form(form, Some(URLENCODED), body.to_string(), &[])
            .await;
        assert_eq!(r.status, 202, "{form}: {}", r.text());
    }
    let leads = daemon
        .wait_for_leads("limit=500", posts.len(), Duration::from_secs(30))
        .await;
    assert_eq!(leads.len(), posts.len(), "{}", daemon.log());
    leads
}

/// The lead ids by email address.
fn ids_by_email(leads: &[Value]) -> HashMap<String, i64> {
    leads
        .iter()
        .map(|l| {
            (
                l["email"].as_str().unwrap_or_default().to_owned(),
                l["id"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// The ids a list query answers, all pages.
async fn ids(daemon: &TestDaemon, query: &str) -> BTreeSet<i64> {
    let page = daemon.get(&format!("/v1/leads?limit=500&{query}")).await;
    assert_eq!(page.status, 200, "{query}: {}", page.text());
    let json = page.json();
    let items = json["items"].as_array().unwrap();
    assert_eq!(
        json["total"].as_u64().unwrap() as usize,
        items.len(),
        "{query}"
    );
    items.iter().map(|l| l["id"].as_i64().unwrap()).collect()
}

async fn patch_json(daemon: &TestDaemon, path: &str, body: Value) -> Response {
    patch_if(daemon, path, body, None).await
}

/// PATCH with the admin token and, when given, an `If-Match` header.
async fn patch_if(daemon: &TestDaemon, path: &str, body: Value, tag: Option<&str>) -> Response {
    let mut request = daemon
        .http
        .patch(format!("{}{path}", daemon.base))
        .bearer_auth(&daemon.admin)
        .json(&body);
    if let Some(tag) = tag {
        request = request.header("if-match", tag);
    }
    Response::read(request.send().await.expect("the daemon answers")).await
}

/// A user in a team, straight into the table (users are managed elsewhere).
async fn user(pool: &PgPool, name: &str, active: bool) -> i64 {
    let team: i64 = sqlx::query_scalar(
        "INSERT INTO teams (name) VALUES ('Sales') ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    sqlx::query_scalar(
        "INSERT INTO users (name, email, active, team_id) VALUES ($1, lower($1) || '@example.com', $2, $3) RETURNING id",
    )
    .bind(name)
    .bind(active)
    .bind(team)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_search_in_any_accent_and_page_every_sort_without_gaps_or_repeats() {
    let daemon = TestDaemon::start().await;
    let leads = file_leads(
        &daemon,
        &[
            (
                "it-contatti",
                "name=Niccol%C3%B2+Bianchi&email=niccolo%40example.it&phone=347+123+4567&company=Falegnameria+Rossi",
            ),
            ("it-preventivo", "name=Ana+Rossi&email=ana%40example.it"),
            (
                "pl-kontakt",
                "name=%C5%81ukasz+%C5%BB%C3%B3%C5%82kiewski&email=lukasz%40zolkiewski.example.pl&phone=601+234+567&company=%C5%BB%C3%B3%C5%82kiewski+i+Synowie",
            ),
            ("pl-oferta", "name=Ana+Rossi&email=ana.pl%40example.pl"),
            (
                "vn-lien-he",
                "name=Nguy%E1%BB%85n+V%C4%83n+%C4%90%E1%BB%A9c&email=duc%40example.vn&company=C%C3%B4ng+ty+TNHH+An+Ph%C3%A1t",
            ),
            ("vn-bao-gia", "name=Tr%E1%BA%A7n+Th%E1%BB%8B+H%C3%A0&email=ha%40example.vn"),
            ("en-contact", "name=Dan+Pike&email=dan%40example.com"),
            ("en-demo-request", "email=nameless%40example.com"),
        ],
    )
    .await;
    let by_email = ids_by_email(&leads);
    let id = |email: &str| by_email[email];
    let set = |emails: &[&str]| emails.iter().map(|e| id(e)).collect::<BTreeSet<_>>();
    let all: BTreeSet<i64> = by_email.values().copied().collect();

    // Text search: case, accents and stroke letters fold; phone digits match as typed.
    for (q, expected) in [
        ("niccolo", set(&["niccolo@example.it"])),
        ("NICCOL%C3%92", set(&["niccolo@example.it"])),
        ("lukasz+zolkiewski", set(&["lukasz@zolkiewski.example.pl"])),
        (
            "%C5%BC%C3%B3%C5%82kiew",
            set(&["lukasz@zolkiewski.example.pl"]),
        ),
        ("nguyen+van+duc", set(&["duc@example.vn"])),
        ("%C4%90%E1%BB%A9c", set(&["duc@example.vn"])),
        ("an+phat", set(&["duc@example.vn"])),
        ("tran+thi+ha", set(&["ha@example.vn"])),
        ("347+123", set(&["niccolo@example.it"])),
        ("%2B48+601", set(&["lukasz@zolkiewski.example.pl"])),
        (
            "rossi",
            set(&["niccolo@example.it", "ana@example.it", "ana.pl@example.pl"]),
        ),
        ("example.vn", set(&["duc@example.vn", "ha@example.vn"])),
        ("50%25_off", BTreeSet::new()),
    ] {
        assert_eq!(ids(&daemon, &format!("q={q}")).await, expected, "q={q}");
    }

    // Assigning two leads and tagging one gives the other filters something to tell apart.
    let pool = daemon.db().await;
    let marta = user(&pool, "Marta", true).await;
    let assign = daemon
        .post_json(
            "/v1/leads/bulk/assign",
            json!({"filter": {"q": "rossi", "source": "web-it-preventivo"}, "responsible_id": marta}),
        )
        .await;
    assert_eq!(assign.status, 200, "{}", assign.text());
    assert_eq!(assign.json()["changed"], 1);
    let r = patch_json(
        &daemon,
        &format!("/v1/leads/{}", id("duc@example.vn")),
        json!({"responsible_id": marta, "tags": ["vip"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        ids(&daemon, &format!("responsible={marta}")).await,
        set(&["ana@example.it", "duc@example.vn"])
    );
    let unassigned = ids(&daemon, "responsible=none").await;
    assert_eq!(unassigned.len(), all.len() - 2);
    assert!(!unassigned.contains(&id("duc@example.vn")));
    assert_eq!(ids(&daemon, "tag=vip").await, set(&["duc@example.vn"]));
    assert_eq!(ids(&daemon, "semantic=open").await, all);
    assert!(ids(&daemon, "semantic=success").await.is_empty());
    assert_eq!(ids(&daemon, "repeat=false").await, all);
    assert_eq!(ids(&daemon, "pipeline=default&stage=open").await, all);
    assert!(ids(&daemon, "pipeline=deals").await.is_empty());
    assert_eq!(
        ids(&daemon, "channel=form&q=ana&responsible=none").await,
        set(&["ana.pl@example.pl"])
    );
    let detail = daemon
        .get(&format!("/v1/leads/{}", id("duc@example.vn")))
        .await;
    assert_eq!(
        detail.json()["responsible"],
        json!({"id": marta, "name": "Marta"})
    );

    // Every sort, both ways, three at a time: the pages together are the whole list in
    // the order PostgreSQL gives for the same sort, each lead once. A bulk stage change
    // gives most leads the same stage_entered_at, and names repeat, so ties are paged too.
    let moved = daemon
        .post_json(
            "/v1/leads/bulk/stage",
            json!({"filter": {"all": true}, "stage": "working"}),
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.text());
    for (sort, expr) in [
        ("id", "id"),
        ("created_at", "created_at"),
        ("updated_at", "updated_at"),
        ("stage_entered_at", "stage_entered_at"),
        ("name", "coalesce(name, '')"),
    ] {
        for order in ["asc", "desc"] {
            let expected: Vec<i64> = sqlx::query_scalar(&format!(
                "SELECT id FROM leads ORDER BY {expr} {order}, id {order}"
            ))
            .fetch_all(&pool)
            .await
            .unwrap();
            let mut seen = Vec::new();
            let mut cursor: Option<String> = None;
            let mut pages = 0;
            loop {
                let mut q = format!("/v1/leads?sort={sort}&order={order}&limit=3");
                if let Some(c) = &cursor {
                    q.push_str(&format!("&cursor={c}"));
                }
                let page = daemon.get(&q).await;
                assert_eq!(page.status, 200, "{q}: {}", page.text());
                let json = page.json();
                assert_eq!(json["total"], all.len(), "{q}");
                seen.extend(
                    json["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|l| l["id"].as_i64().unwrap()),
                );
                pages += 1;
                match json["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_owned()),
                    None => break,
                }
                // A cursor belongs to its sort: reusing it under another is refused.
                let other = if order == "asc" { "desc" } else { "asc" };
                daemon
                    .get(&format!(
                        "/v1/leads?sort={sort}&order={other}&cursor={}",
                        cursor.as_ref().unwrap()
                    ))
                    .await
                    .assert_error(400, "bad_query");
            }
            assert_eq!(seen, expected, "sort={sort}&order={order}");
            assert_eq!(pages, all.len().div_ceil(3), "sort={sort}&order={order}");
        }
    }
    daemon
        .get("/v1/leads?cursor=not-a-cursor")
        .await
        .assert_error(400, "bad_query");
    daemon
        .get("/v1/leads?sort=email")
        .await
        .assert_error(400, "bad_query");
    daemon
        .get("/v1/leads?responsible=me")
        .await
        .assert_error(400, "bad_query");

    // The kanban board: every active stage in order, its count, the first cards and a
    // cursor for the rest of the column.
    let board = daemon
        .get("/v1/pipelines/default/kanban?per_column=3&sort=name")
        .await;
    assert_eq!(board.status, 200, "{}", board.text());
    let board = board.json();
    let columns = board["columns"].as_array().unwrap();
    let codes: Vec<&str> = columns
        .iter()
        .map(|c| c["stage"]["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "not_engaged",
            "open",
            "attempting_contact",
            "working",
            "qualified",
            "junk",
            "ignored"
        ]
    );
    let working = &columns[3];
    assert_eq!(working["count"], all.len());
    assert_eq!(working["items"].as_array().unwrap().len(), 3);
    assert_eq!(columns[1]["count"], 0);
    let mut cards: Vec<i64> = working["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_i64().unwrap())
        .collect();
    let mut cursor = working["next_cursor"].as_str().map(str::to_owned);
    while let Some(c) = cursor {
        let page = daemon
            .get(&format!(
                "/v1/pipelines/default/kanban/working?sort=name&limit=3&cursor={c}"
            ))
            .await;
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.json();
        cards.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["id"].as_i64().unwrap()),
        );
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    let expected: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM leads ORDER BY coalesce(name, ''), id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(cards, expected);
    // Filters narrow each column's count.
    let narrowed = daemon
        .get(&format!("/v1/pipelines/default/kanban?responsible={marta}"))
        .await
        .json();
    assert_eq!(narrowed["columns"][3]["count"], 2);
    daemon
        .get("/v1/pipelines/nope/kanban")
        .await
        .assert_error(404, "pipeline_not_found");
    daemon
        .get("/v1/pipelines/default/kanban/nope")
        .await
        .assert_error(404, "stage_not_found");
    daemon
        .get("/v1/pipelines/default/kanban?stage=open")
        .await
        .assert_error(400, "bad_query");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_lead_keeps_absent_fields_clears_nulls_refuses_empties_and_moves_its_keys() {
    let daemon = TestDaemon::start().await;
    let leads = file_leads(
        &daemon,
        &[(
            "it-contatti",
            "name=Giulia+Verdi&email=giulia%40example.it&phone=347+765+4321&company=Studio+Verdi&message=Preventivo",
        )],
    )
    .await;
    let id = leads[0]["id"].as_i64().unwrap();
    let path = format!("/v1/leads/{id}");
    let pool = daemon.db().await;
    let marta = user(&pool, "Marta", true).await;
    let gone = user(&pool, "Gino", false).await;

    let r = patch_json(&daemon, &path, json!({"name": "Giulia Verdi Bianchi"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let lead = r.json();
    assert_eq!(lead["name"], "Giulia Verdi Bianchi");
    assert_eq!(lead["email"], "giulia@example.it");
    assert_eq!(lead["company"], "Studio Verdi");
    assert_eq!(lead["message"], "Preventivo");

    let lead = patch_json(&daemon, &path, json!({"company": null}))
        .await
        .json();
    assert_eq!(lead["company"], Value::Null);
    assert_eq!(lead["name"], "Giulia Verdi Bianchi");

    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"message": "   "}), "message"),
        (json!({"title": null}), "title"),
        (json!({"email": "not-an-address"}), "email"),
        (json!({"phone": "12"}), "phone"),
        (json!({"tags": ["ok", ""]}), "tags"),
        (json!({"responsible_id": gone}), "responsible_id"),
        (json!({"responsible_id": 999_999}), "responsible_id"),
    ] {
        let r = patch_json(&daemon, &path, body.clone()).await;
        r.assert_error(422, "invalid_fields");
        assert_eq!(r.json()["fields"][0]["field"], field, "{body}");
    }
    patch_json(&daemon, &path, json!({"nmae": "typo"}))
        .await
        .assert_error(422, "invalid_fields");
    patch_json(&daemon, "/v1/leads/999999", json!({"name": "Nobody"}))
        .await
        .assert_error(404, "lead_not_found");
    // Nothing refused above changed the lead.
    let unchanged = daemon.get(&path).await.json();
    assert_eq!(unchanged["name"], "Giulia Verdi Bianchi");
    assert_eq!(unchanged["responsible"], Value::Null);

    let r = patch_json(
        &daemon,
        &path,
        json!({"email": "Giulia.Nuova@Example.IT", "phone": "02 8736 1234", "default_region": "IT",
               "tags": ["vip", " vip ", "richiamare"], "responsible_id": marta}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let lead = r.json();
    assert_eq!(lead["email"], "giulia.nuova@example.it");
    assert_eq!(lead["phone"], "+390287361234");
    assert_eq!(lead["tags"], json!(["richiamare", "vip"]));
    assert_eq!(lead["responsible"], json!({"id": marta, "name": "Marta"}));
    let keys: Vec<&str> = lead["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(keys.contains(&"email:giulia.nuova@example.it"), "{keys:?}");
    assert!(keys.contains(&"phone:+390287361234"), "{keys:?}");
    assert!(
        !keys
            .iter()
            .any(|k| k.contains("giulia@") || k.contains("3477654321")),
        "{keys:?}"
    );
    let updates: Vec<&Value> = lead["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "updated")
        .collect();
    assert_eq!(updates.len(), 3, "{}", lead["events"]);
    assert_eq!(updates[2]["data"]["by"], "admin");
    let fields: BTreeSet<&str> = updates[2]["data"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from(["email", "phone", "tags", "responsible_id"])
    );
    let r = patch_json(&daemon, &path, json!({"responsible_id": null})).await;
    assert_eq!(r.json()["responsible"], Value::Null);

    // If-Match: an edit of an older version is refused, one of the current version is
    // made and answers the new version.
    let read = daemon.get(&path).await;
    let tag = read.headers["etag"].to_str().unwrap().to_owned();
    patch_if(&daemon, &path, json!({"message": "Old"}), Some("\"1\""))
        .await
        .assert_error(412, "lead_changed");
    patch_if(&daemon, &path, json!({"message": "Old"}), Some("yesterday"))
        .await
        .assert_error(400, "bad_if_match");
    let r = patch_if(&daemon, &path, json!({"message": "Nuovo"}), Some(&tag)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_ne!(r.headers["etag"].to_str().unwrap(), tag);
    patch_if(&daemon, &path, json!({"message": "Again"}), Some(&tag))
        .await
        .assert_error(412, "lead_changed");
    assert_eq!(daemon.get(&path).await.json()["message"], "Nuovo");

    // The next planned activity shows on the lead, in the list and in the detail.
    sqlx::query(
        "INSERT INTO activities (lead_id, kind, subject, occurred_at, due_at, done, assignee_id)
         VALUES ($1, 'call', 'done already', now(), now() - interval '1 day', true, NULL),
                ($1, 'meeting', 'later', now(), now() + interval '2 days', false, NULL),
                ($1, 'call', 'call back', now(), now() + interval '1 day', false, $2)",
    )
    .bind(id)
    .bind(marta)
    .execute(&pool)
    .await
    .unwrap();
    let next = &daemon.get(&path).await.json()["next_activity"];
    assert_eq!(next["subject"], "call back");
    assert_eq!(next["kind"], "call");
    assert_eq!(next["assignee_id"], marta);
    let listed = daemon.leads("").await;
    assert_eq!(listed[0]["next_activity"]["subject"], "call back");

    // The keys moved with the address: a new inquiry from the new address joins this
    // lead, one from the old address is somebody new.
    let r = daemon
        .post_form(
            "it-contatti",
            Some(URLENCODED),
            "name=Giulia&email=giulia.nuova%40example.it&message=Ancora+io",
            &[],
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(
        daemon.wait_for_inquiries(2, Duration::from_secs(30)).await,
        2
    );
    let lead = daemon.get(&path).await.json();
    assert_eq!(lead["inquiry_count"], 2, "{}", daemon.log());
    let r = daemon
        .post_form(
            "it-contatti",
            Some(URLENCODED),
            "name=Giulia&email=giulia%40example.it&message=Vecchio+indirizzo",
            &[],
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let all = daemon.wait_for_leads("", 2, Duration::from_secs(30)).await;
    assert_eq!(all.len(), 2);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_changes_count_what_they_did_skip_finished_leads_and_write_history() {
    let daemon = TestDaemon::start().await;
    let leads = file_leads(
        &daemon,
        &[
            ("en-contact", "name=Amy+One&email=amy%40example.com"),
            ("en-contact", "name=Bob+Two&email=bob%40example.com"),
            ("en-contact", "name=Cat+Three&email=cat%40example.com"),
            ("en-contact", "name=Don+Four&email=don%40example.com"),
            ("it-contatti", "name=Eva+Cinque&email=eva%40example.it"),
            ("it-contatti", "name=Fabio+Sei&email=fabio%40example.it"),
        ],
    )
    .await;
    let by_email = ids_by_email(&leads);
    let pool = daemon.db().await;
    // Two leads are finished: one qualified, one junk.
    for (email, stage) in [
        ("eva@example.it", "qualified"),
        ("fabio@example.it", "junk"),
    ] {
        sqlx::query(
            "UPDATE leads SET stage_id = (SELECT id FROM stages WHERE code = $2
                 AND pipeline_id = leads.pipeline_id) WHERE id = $1",
        )
        .bind(by_email[email])
        .bind(stage)
        .execute(&pool)
        .await
        .unwrap();
    }
    let marta = user(&pool, "Marta", true).await;
    let gone = user(&pool, "Gino", false).await;

    for (body, field) in [
        (json!({"stage": "working"}), "filter"),
        (json!({"filter": {}, "stage": "working"}), "filter"),
        (
            json!({"filter": {"all": false}, "stage": "working"}),
            "filter",
        ),
        (
            json!({"filter": {"stagee": "open"}, "stage": "working"}),
            "filter",
        ),
        (json!({"filter": {"all": true}}), "stage"),
        (json!({"filter": {"all": true}, "stage": "nope"}), "stage"),
        (
            json!({"filter": {"all": true}, "stage": "qualified"}),
            "stage",
        ),
        (json!({"filter": {"all": true}, "stage": "junk"}), "stage"),
        (
            json!({"filter": {"all": true}, "stage": "working", "reason": " "}),
            "reason",
        ),
    ] {
        let r = daemon.post_json("/v1/leads/bulk/stage", body.clone()).await;
        r.assert_error(422, "invalid_fields");
        assert_eq!(r.json()["fields"][0]["field"], field, "{body}");
    }
    let history_rows = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM lead_stage_history")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let before = history_rows().await;

    let r = daemon
        .post_json(
            "/v1/leads/bulk/stage",
            json!({"filter": {"all": true}, "stage": "working", "reason": "spring campaign"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let outcome = r.json();
    assert_eq!(outcome["matched"], 6);
    assert_eq!(outcome["changed"], 4);
    assert_eq!(outcome["skipped_finished"], 2);
    assert_eq!(outcome["unchanged"], 0);
    assert_eq!(history_rows().await, before + 4);
    let amy = daemon
        .get(&format!("/v1/leads/{}", by_email["amy@example.com"]))
        .await
        .json();
    let last = amy["stage_history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["from"], "open");
    assert_eq!(last["to"], "working");
    assert_eq!(last["changed_by"], "admin");
    assert_eq!(last["reason"], "spring campaign");
    assert_eq!(amy["stage"]["code"], "working");
    let eva = daemon
        .get(&format!("/v1/leads/{}", by_email["eva@example.it"]))
        .await
        .json();
    assert_eq!(eva["stage"]["code"], "qualified");

    // Again: nothing left to move.
    let again = daemon
        .post_json(
            "/v1/leads/bulk/stage",
            json!({"filter": {"semantic": "open"}, "stage": "working"}),
        )
        .await
        .json();
    assert_eq!(again["matched"], 4);
    assert_eq!(again["changed"], 0);
    assert_eq!(again["unchanged"], 4);
    assert_eq!(history_rows().await, before + 4);

    // Assign the English leads, then the rest of the unassigned queue.
    let r = daemon
        .post_json(
            "/v1/leads/bulk/assign",
            json!({"filter": {"source": "web-en-contact"}, "responsible_id": marta}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["matched"], 4);
    assert_eq!(r.json()["changed"], 4);
    let r = daemon
        .post_json(
            "/v1/leads/bulk/assign",
            json!({"filter": {"responsible": "none"}, "responsible_id": marta}),
        )
        .await
        .json();
    assert_eq!(
        (r["matched"].as_i64(), r["changed"].as_i64()),
        (Some(2), Some(2))
    );
    let page = daemon
        .get(&format!("/v1/leads?responsible={marta}&limit=1"))
        .await
        .json();
    assert_eq!(page["total"], 6);
    let assigned_events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM lead_events WHERE kind = 'assigned'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(assigned_events, 6);
    for (body, field) in [
        (
            json!({"filter": {"all": true}, "responsible_id": gone}),
            "responsible_id",
        ),
        (
            json!({"filter": {"all": true}, "responsible_id": 999_999}),
            "responsible_id",
        ),
        (json!({"filter": {"all": true}}), "responsible_id"),
        (json!({"responsible_id": marta}), "filter"),
    ] {
        let r = daemon
            .post_json("/v1/leads/bulk/assign", body.clone())
            .await;
        r.assert_error(422, "invalid_fields");
        assert_eq!(r.json()["fields"][0]["field"], field, "{body}");
    }
    // Back to the unassigned queue.
    let r = daemon
        .post_json(
            "/v1/leads/bulk/assign",
            json!({"filter": {"responsible": marta.to_string()}, "responsible_id": null}),
        )
        .await
        .json();
    assert_eq!(r["changed"], 6);
    assert_eq!(
        daemon.get("/v1/leads?responsible=none").await.json()["total"],
        6
    );
    pool.close().await;
}
