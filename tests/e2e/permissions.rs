//! Roles and scopes: every endpoint walked for every kind of caller, and user tokens from
//! the command line.
//!
//! The matrix is a table: one [`Row`] per endpoint names its minimum role, whether it
//! works on one lead (then it is tried on a lead of each kind: the caller's own, a
//! teammate's, another team's and an unassigned one), and the status it answers when it is
//! allowed. Adding an endpoint to the test is adding a row.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use store::Role;

use crate::support::{Options, TestDaemon};

const URLENCODED: &str = "application/x-www-form-urlencoded";

/// Who may call an endpoint.
#[derive(Clone, Copy, Debug)]
enum Needs {
    /// No token at all (health and metrics).
    Nothing,
    /// A token with at least this role.
    AtLeast(Role),
}

/// One endpoint of the matrix.
struct Row {
    method: &'static str,
    /// A path template: `{lead}`, `{activity}` (the planned activity on `{lead}`), `{contact}`, `{company}`, `{user}`, `{team}`, `{token}`
    /// (a fresh token to revoke) and `{n}` (a number unique to the call) are filled in.
    path: &'static str,
    /// A JSON body template (same placeholders), if the endpoint takes one.
    body: Option<&'static str>,
    needs: Needs,
    /// Works on the lead in `{lead}`: out of scope answers like a missing lead.
    lead_scoped: bool,
    /// The status when the caller is allowed.
    ok: u16,
}

const fn row(
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    needs: Needs,
    lead_scoped: bool,
    ok: u16,
) -> Row {
    Row {
        method,
        path,
        body,
        needs,
        lead_scoped,
        ok,
    }
}

const AGENT: Needs = Needs::AtLeast(Role::Agent);
const SUPERVISOR: Needs = Needs::AtLeast(Role::Supervisor);
const ADMIN: Needs = Needs::AtLeast(Role::Admin);

/// Every endpoint of the ops API and the open health endpoints.
const MATRIX: &[Row] = &[
    row("GET", "/healthz", None, Needs::Nothing, false, 200),
    row("GET", "/readyz", None, Needs::Nothing, false, 200),
    row("GET", "/metrics", None, Needs::Nothing, false, 200),
    row("GET", "/v1/me", None, AGENT, false, 200),
    row("GET", "/v1/leads", None, AGENT, false, 200),
    row("GET", "/v1/leads/{lead}", None, AGENT, true, 200),
    // Form leads have no chat or mail thread to answer in: 409 once the lead is found.
    row(
        "POST",
        "/v1/leads/{lead}/messages",
        Some(r#"{"text": "Buongiorno {n}"}"#),
        AGENT,
        true,
        409,
    ),
    row("GET", "/v1/contacts", None, AGENT, false, 200),
    row(
        "POST",
        "/v1/contacts",
        Some(r#"{"name": "Cliente {n}", "emails": ["cliente{n}@example.it"]}"#),
        AGENT,
        false,
        201,
    ),
    row("GET", "/v1/contacts/{contact}", None, AGENT, false, 200),
    row("GET", "/v1/companies", None, AGENT, false, 200),
    row(
        "POST",
        "/v1/companies",
        Some(r#"{"name": "Ditta {n}", "domain": "ditta{n}.it"}"#),
        AGENT,
        false,
        201,
    ),
    row("GET", "/v1/companies/{company}", None, AGENT, false, 200),
    row("GET", "/v1/users", None, SUPERVISOR, false, 200),
    row(
        "POST",
        "/v1/users",
        Some(
            r#"{"name": "Nuovo {n}", "email": "nuovo{n}@example.it", "time_zone": "Europe/Rome"}"#,
        ),
        ADMIN,
        false,
        201,
    ),
    row("GET", "/v1/users/{user}", None, SUPERVISOR, false, 200),
    row(
        "PATCH",
        "/v1/users/{user}",
        Some(r#"{"name": "Rinominato {n}"}"#),
        ADMIN,
        false,
        200,
    ),
    row("GET", "/v1/teams", None, SUPERVISOR, false, 200),
    row(
        "POST",
        "/v1/teams",
        Some(r#"{"name": "Squadra {n}"}"#),
        ADMIN,
        false,
        201,
    ),
    row(
        "PATCH",
        "/v1/teams/{team}",
        Some(r#"{"name": "Est {n}"}"#),
        ADMIN,
        false,
        200,
    ),
    row("GET", "/v1/users/{user}/tokens", None, ADMIN, false, 200),
    row(
        "POST",
        "/v1/users/{user}/tokens",
        Some(r#"{"role": "agent", "label": "matrice {n}"}"#),
        ADMIN,
        false,
        201,
    ),
    row("DELETE", "/v1/tokens/{token}", None, ADMIN, false, 200),
    // Working leads. Rows that change a lead use answers that stay the same however
    // often they are repeated (an unknown stage, a reason not on the list, reopening a
    // lead that is not finished, linking a contact that does not exist), so the matrix proves who gets through, not the order.
    row(
        "PATCH",
        "/v1/leads/{lead}",
        Some(r#"{"message": "nota {n}"}"#),
        AGENT,
        true,
        200,
    ),
    row(
        "POST",
        "/v1/leads/{lead}/stage",
        Some(r#"{"stage": "no_such_stage"}"#),
        AGENT,
        true,
        422,
    ),
    row(
        "POST",
        "/v1/leads/{lead}/finish",
        Some(r#"{"outcome": "converted", "create": [{"link": {"contact_id": 999999999}}]}"#),
        AGENT,
        true,
        422,
    ),
    row(
        "POST",
        "/v1/leads/{lead}/reopen",
        Some(r#"{"stage": "working", "reason": "again"}"#),
        ADMIN,
        true,
        409,
    ),
    row("GET", "/v1/leads/{lead}/activities", None, AGENT, true, 200),
    row(
        "POST",
        "/v1/leads/{lead}/activities",
        Some(r#"{"kind": "task", "subject": "Richiamare {n}", "due_at": "2030-01-07T09:00:00Z"}"#),
        AGENT,
        true,
        201,
    ),
    row(
        "GET",
        "/v1/activities?assignee={user}",
        None,
        AGENT,
        false,
        200,
    ),
    row("GET", "/v1/views/activities", None, AGENT, false, 200),
    row(
        "POST",
        "/v1/leads/bulk/assign",
        Some(r#"{"filter": {"q": "nessuno{n}"}, "responsible_id": null}"#),
        SUPERVISOR,
        false,
        200,
    ),
    row(
        "POST",
        "/v1/leads/bulk/stage",
        Some(r#"{"filter": {"q": "nessuno{n}"}, "stage": "working"}"#),
        SUPERVISOR,
        false,
        200,
    ),
    row("GET", "/v1/pipelines", None, AGENT, false, 200),
    row(
        "GET",
        "/v1/pipelines/default/kanban",
        None,
        AGENT,
        false,
        200,
    ),
    row(
        "GET",
        "/v1/pipelines/default/kanban/open",
        None,
        AGENT,
        false,
        200,
    ),
    row(
        "POST",
        "/v1/pipelines",
        Some(
            r##"{"code": "p{n}", "name": "Pipeline {n}", "stages": [{"code": "new", "name": "New", "color": "#2196F3", "semantic": "open", "initial": true}, {"code": "won", "name": "Won", "color": "#4CAF50", "semantic": "success"}]}"##,
        ),
        ADMIN,
        false,
        201,
    ),
    row(
        "POST",
        "/v1/pipelines/default/stages",
        Some(r##"{"code": "s{n}", "name": "Stage {n}", "color": "#9C27B0", "semantic": "open"}"##),
        ADMIN,
        false,
        201,
    ),
    row(
        "PATCH",
        "/v1/pipelines/default/stages/working",
        Some(r#"{"name": "Working {n}"}"#),
        ADMIN,
        false,
        200,
    ),
    row(
        "PUT",
        "/v1/pipelines/default/order",
        Some(r#"{"stages": []}"#),
        ADMIN,
        false,
        422,
    ),
    row(
        "DELETE",
        "/v1/pipelines/default/stages/open",
        None,
        ADMIN,
        false,
        409,
    ),
    row("GET", "/v1/deals", None, AGENT, false, 200),
    row("GET", "/v1/reports/funnel", None, SUPERVISOR, false, 200),
    row(
        "GET",
        "/v1/reports/responsible",
        None,
        SUPERVISOR,
        false,
        200,
    ),
    row(
        "GET",
        "/v1/reports/stage-times",
        None,
        SUPERVISOR,
        false,
        200,
    ),
];

/// The kinds of lead a lead-scoped row is tried on, from the point of view of the
/// supervisor and agent of team Nord.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum LeadKind {
    /// Assigned to the agent who calls.
    Own,
    /// Assigned to the agent's teammate.
    Teammate,
    /// Assigned to an agent of another team.
    OtherTeam,
    /// Assigned to nobody.
    Unassigned,
}

const LEAD_KINDS: [LeadKind; 4] = [
    LeadKind::Own,
    LeadKind::Teammate,
    LeadKind::OtherTeam,
    LeadKind::Unassigned,
];

/// A caller of the matrix.
struct Who {
    name: &'static str,
    token: Option<String>,
    role: Option<Role>,
    /// The leads this caller may see.
    sees: &'static [LeadKind],
}

/// What the people of the test are called in the database.
struct World {
    callers: Vec<Who>,
    leads: BTreeMap<LeadKind, i64>,
    ids: BTreeMap<&'static str, i64>,
    /// A planned activity on each lead, by lead id (`{activity}`).
    activities: BTreeMap<i64, i64>,
}

async fn created(daemon: &TestDaemon, token: &str, path: &str, body: Value) -> Value {
    let r = daemon.call_as(Some(token), "POST", path, Some(body)).await;
    assert_eq!(r.status, 201, "POST {path}: {}", r.text());
    r.json()
}

async fn user(daemon: &TestDaemon, name: &str, team: Option<i64>) -> i64 {
    let email = format!("{}@example.it", name.to_lowercase());
    created(
        daemon,
        &daemon.admin,
        "/v1/users",
        json!({"name": name, "email": email, "team_id": team}),
    )
    .await["id"]
        .as_i64()
        .unwrap()
}

async fn token(daemon: &TestDaemon, user: i64, role: &str) -> String {
    let issued = created(
        daemon,
        &daemon.admin,
        &format!("/v1/users/{user}/tokens"),
        json!({"role": role}),
    )
    .await;
    issued["token"].as_str().unwrap().to_owned()
}

/// Two teams with a supervisor each, agents, an admin user, a lead of every kind, a
/// contact and a company.
async fn world(daemon: &TestDaemon) -> World {
    let nord = created(daemon, &daemon.admin, "/v1/teams", json!({"name": "Nord"})).await["id"]
        .as_i64()
        .unwrap();
    let sud = created(daemon, &daemon.admin, "/v1/teams", json!({"name": "Sud"})).await["id"]
        .as_i64()
        .unwrap();
    let spare = created(daemon, &daemon.admin, "/v1/teams", json!({"name": "Est"})).await["id"]
        .as_i64()
        .unwrap();
    let boss = user(daemon, "Capo", Some(nord)).await;
    let boss_sud = user(daemon, "CapoSud", Some(sud)).await;
    let agent = user(daemon, "Agente", Some(nord)).await;
    let mate = user(daemon, "Collega", Some(nord)).await;
    let other = user(daemon, "Altro", Some(sud)).await;
    let root = user(daemon, "Amministratore", None).await;
    let victim = user(daemon, "Bersaglio", None).await;

    for (i, name) in ["Uno", "Due", "Tre", "Quattro"].iter().enumerate() {
        let body = format!(
            "nome={name}&cognome=Rossi&email={}%40clienti.it&telefono=02+1234+567{i}",
            name.to_lowercase()
        );
        let r = daemon
            .post_form("it-contatti", Some(URLENCODED), body, &[])
            .await;
        assert!(r.status < 300, "{}", r.text());
    }
    let filed = daemon.wait_for_leads("", 4, Duration::from_secs(30)).await;
    assert_eq!(filed.len(), 4, "{}", daemon.log());
    let by_email = |local: &str| {
        filed
            .iter()
            .find(|l| l["email"] == format!("{local}@clienti.it"))
            .and_then(|l| l["id"].as_i64())
            .expect("the lead")
    };
    let leads = BTreeMap::from([
        (LeadKind::Own, by_email("uno")),
        (LeadKind::Teammate, by_email("due")),
        (LeadKind::OtherTeam, by_email("tre")),
        (LeadKind::Unassigned, by_email("quattro")),
    ]);
    // Assigning is another endpoint's job; here the database says who is responsible.
    let pool = daemon.db().await;
    for (kind, responsible) in [
        (LeadKind::Own, agent),
        (LeadKind::Teammate, mate),
        (LeadKind::OtherTeam, other),
    ] {
        sqlx::query("UPDATE leads SET responsible_id = $2 WHERE id = $1")
            .bind(leads[&kind])
            .bind(responsible)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;

    let contact = created(
        daemon,
        &daemon.admin,
        "/v1/contacts",
        json!({"name": "Contatto", "emails": ["contatto@clienti.it"]}),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let company = created(
        daemon,
        &daemon.admin,
        "/v1/companies",
        json!({"name": "Azienda", "domain": "azienda.it"}),
    )
    .await["id"]
        .as_i64()
        .unwrap();

    let mut activities = BTreeMap::new();
    for lead in leads.values() {
        let planned = created(
            daemon,
            &daemon.admin,
            &format!("/v1/leads/{lead}/activities"),
            json!({"kind": "call", "subject": "Richiamare", "due_at": "2030-01-07T09:00:00Z"}),
        )
        .await;
        activities.insert(*lead, planned["id"].as_i64().unwrap());
    }

    use LeadKind::*;
    let callers = vec![
        Who {
            name: "anonymous",
            token: None,
            role: None,
            sees: &[],
        },
        Who {
            name: "bootstrap admin",
            token: Some(daemon.admin.clone()),
            role: Some(Role::Admin),
            sees: &[Own, Teammate, OtherTeam, Unassigned],
        },
        Who {
            name: "admin user",
            token: Some(token(daemon, root, "admin").await),
            role: Some(Role::Admin),
            sees: &[Own, Teammate, OtherTeam, Unassigned],
        },
        Who {
            name: "supervisor of Nord",
            token: Some(token(daemon, boss, "supervisor").await),
            role: Some(Role::Supervisor),
            sees: &[Own, Teammate, Unassigned],
        },
        Who {
            name: "supervisor of Sud",
            token: Some(token(daemon, boss_sud, "supervisor").await),
            role: Some(Role::Supervisor),
            sees: &[OtherTeam, Unassigned],
        },
        Who {
            name: "agent of Nord",
            token: Some(token(daemon, agent, "agent").await),
            role: Some(Role::Agent),
            sees: &[Own],
        },
        // The role is the token's: an agent token of an admin-capable person is an agent.
        Who {
            name: "agent of Sud",
            token: Some(token(daemon, other, "agent").await),
            role: Some(Role::Agent),
            sees: &[OtherTeam],
        },
    ];
    World {
        callers,
        leads,
        ids: BTreeMap::from([
            ("contact", contact),
            ("company", company),
            ("user", victim),
            ("team", spare),
        ]),
        activities,
    }
}

/// Fills a template's placeholders; `{token}` issues a fresh token to revoke.
async fn fill(daemon: &TestDaemon, world: &World, template: &str, lead: i64, n: u32) -> String {
    // The missing lead has no activity: an id past every activity stands for it.
    let activity = world
        .activities
        .get(&lead)
        .copied()
        .unwrap_or(i64::from(i32::MAX));
    let mut out = template
        .replace("{lead}", &lead.to_string())
        .replace("{activity}", &activity.to_string())
        .replace("{n}", &n.to_string());
    for (name, id) in &world.ids {
        out = out.replace(&format!("{{{name}}}"), &id.to_string());
    }
    if out.contains("{token}") {
        let issued = created(
            daemon,
            &daemon.admin,
            &format!("/v1/users/{}/tokens", world.ids["user"]),
            json!({"role": "agent"}),
        )
        .await;
        out = out.replace("{token}", &issued["id"].to_string());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_every_role_as_the_rules_say() {
    let daemon = TestDaemon::start().await;
    let world = world(&daemon).await;
    let missing_lead = world.leads.values().max().unwrap() + 1000;
    let mut n = 0u32;
    let mut failures = Vec::new();
    for row in MATRIX {
        let leads: Vec<Option<LeadKind>> = if row.lead_scoped {
            LEAD_KINDS.iter().copied().map(Some).collect()
        } else {
            vec![None]
        };
        // What a lead that does not exist answers: an out-of-scope lead must look the same.
        let missing = if row.lead_scoped {
            n += 1;
            let path = fill(&daemon, &world, row.path, missing_lead, n).await;
            let body = match row.body {
                Some(b) => Some(fill(&daemon, &world, b, missing_lead, n).await),
                None => None,
            };
            let r = daemon
                .call_as(
                    Some(&daemon.admin),
                    row.method,
                    &path,
                    body.map(|b| serde_json::from_str(&b).unwrap()),
                )
                .await;
            assert_eq!(r.status, 404, "{} {path}: {}", row.method, r.text());
            Some(r.json()["error"].clone())
        } else {
            None
        };
        for who in &world.callers {
            for kind in &leads {
                n += 1;
                let lead = kind.map_or(0, |k| world.leads[&k]);
                let path = fill(&daemon, &world, row.path, lead, n).await;
                let body = match row.body {
                    Some(b) => Some(
                        serde_json::from_str::<Value>(&fill(&daemon, &world, b, lead, n).await)
                            .unwrap(),
                    ),
                    None => None,
                };
                let (expected, code) = match (row.needs, who.role) {
                    (Needs::Nothing, _) => (row.ok, None),
                    (Needs::AtLeast(_), None) => (401, Some(json!("missing_token"))),
                    (Needs::AtLeast(min), Some(role)) if role < min => {
                        (403, Some(json!("forbidden")))
                    }
                    (Needs::AtLeast(_), Some(_)) => match kind {
                        Some(k) if !who.sees.contains(k) => (404, missing.clone()),
                        _ => (row.ok, None),
                    },
                };
                let r = daemon
                    .call_as(who.token.as_deref(), row.method, &path, body)
                    .await;
                let code_ok = code.as_ref().is_none_or(|c| r.json()["error"] == *c);
                if r.status != expected || !code_ok {
                    failures.push(format!(
                        "{} {path} as {} (lead {kind:?}): expected {expected} {code:?}, got {} {}",
                        row.method,
                        who.name,
                        r.status,
                        r.text()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} answers broke the rules:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The list of leads holds exactly the leads in the caller's scope.
    for who in world.callers.iter().filter(|w| w.role.is_some()) {
        let r = daemon
            .call_as(who.token.as_deref(), "GET", "/v1/leads?limit=500", None)
            .await;
        assert_eq!(r.status, 200, "{}: {}", who.name, r.text());
        let listed: BTreeSet<i64> = r.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["id"].as_i64().unwrap())
            .collect();
        let expected: BTreeSet<i64> = who.sees.iter().map(|k| world.leads[k]).collect();
        assert_eq!(listed, expected, "GET /v1/leads as {}", who.name);
    }

    // GET /v1/deals/{id}: a deal is seen by whoever sees the lead it came from. Converting
    // finishes the leads the rows above use, so this comes last.
    let mut deals = BTreeMap::new();
    for (kind, lead) in &world.leads {
        let r = daemon
            .call_as(
                Some(&daemon.admin),
                "POST",
                &format!("/v1/leads/{lead}/finish"),
                Some(json!({"outcome": "converted", "create": [{"type": "contact"}, {"type": "deal"}]})),
            )
            .await;
        assert_eq!(r.status, 200, "convert the {kind:?} lead: {}", r.text());
        deals.insert(*kind, r.json()["deal"]["id"].as_i64().unwrap());
    }
    let missing = daemon
        .call_as(Some(&daemon.admin), "GET", "/v1/deals/424242", None)
        .await;
    assert_eq!(missing.status, 404, "{}", missing.text());
    for who in &world.callers {
        for (kind, deal) in &deals {
            let r = daemon
                .call_as(
                    who.token.as_deref(),
                    "GET",
                    &format!("/v1/deals/{deal}"),
                    None,
                )
                .await;
            let expected = match who.role {
                None => 401,
                Some(_) if who.sees.contains(kind) => 200,
                Some(_) => 404,
            };
            assert_eq!(
                r.status,
                expected,
                "GET /v1/deals/{deal} (from the {kind:?} lead) as {}: {}",
                who.name,
                r.text()
            );
            if expected == 404 {
                assert_eq!(
                    r.json()["error"],
                    missing.json()["error"],
                    "as {}",
                    who.name
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn me_names_the_user_role_and_scope_and_bad_input_names_the_field() {
    let daemon = TestDaemon::start().await;
    let me = daemon.get("/v1/me").await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["role"], "admin");
    assert_eq!(me.json()["scope"], "all");
    assert_eq!(me.json()["user"], Value::Null);

    let team = created(&daemon, &daemon.admin, "/v1/teams", json!({"name": "Nord"})).await;
    let ana = created(
        &daemon,
        &daemon.admin,
        "/v1/users",
        json!({"name": " Ana Rossi ", "email": "Ana.Rossi@Example.IT", "team_id": team["id"]}),
    )
    .await;
    assert_eq!(ana["email"], "ana.rossi@example.it");
    assert_eq!(ana["time_zone"], "UTC");
    let id = ana["id"].as_i64().unwrap();
    let secret = token(&daemon, id, "supervisor").await;
    let me = daemon.call_as(Some(&secret), "GET", "/v1/me", None).await;
    assert_eq!(me.json()["role"], "supervisor");
    assert_eq!(me.json()["scope"], "team");
    assert_eq!(me.json()["user"]["id"], id);
    let teams = daemon.get("/v1/teams").await.json();
    assert_eq!(teams["items"][0]["members"][0]["id"], id);

    for (method, path, body, status, code, field) in [
        (
            "POST",
            "/v1/users",
            json!({"name": "Bea", "email": "ana.rossi@EXAMPLE.it"}),
            409,
            "already_exists",
            None,
        ),
        (
            "POST",
            "/v1/users",
            json!({"name": "Bea", "email": "bea@"}),
            422,
            "invalid_fields",
            Some("email"),
        ),
        (
            "POST",
            "/v1/users",
            json!({"name": "Bea", "email": "bea@example.it", "time_zone": "Europe/Roma"}),
            422,
            "invalid_fields",
            Some("time_zone"),
        ),
        (
            "POST",
            "/v1/users",
            json!({"name": "Bea", "email": "bea@example.it", "team_id": 999}),
            422,
            "invalid_fields",
            None,
        ),
        (
            "POST",
            "/v1/users",
            json!({"name": "Bea", "email": "bea@example.it", "role": "admin"}),
            422,
            "invalid_fields",
            None,
        ),
        (
            "PATCH",
            &format!("/v1/users/{id}"),
            json!({"name": "  ", "time_zone": "Mars/Base"}),
            422,
            "invalid_fields",
            Some("name"),
        ),
        (
            "PATCH",
            "/v1/users/abc",
            json!({"name": "X"}),
            404,
            "not_found",
            None,
        ),
        (
            "POST",
            &format!("/v1/users/{id}/tokens"),
            json!({"role": "root"}),
            422,
            "invalid_fields",
            Some("role"),
        ),
        (
            "POST",
            "/v1/users/9999/tokens",
            json!({"role": "agent"}),
            404,
            "not_found",
            None,
        ),
        (
            "POST",
            "/v1/teams",
            json!({"name": "Nord"}),
            409,
            "already_exists",
            None,
        ),
        (
            "DELETE",
            "/v1/tokens/9999",
            Value::Null,
            404,
            "not_found",
            None,
        ),
    ] {
        let body = (!body.is_null()).then_some(body);
        let r = daemon
            .call_as(Some(&daemon.admin), method, path, body)
            .await;
        r.assert_error(status, code);
        if let Some(field) = field {
            assert_eq!(r.json()["fields"][0]["field"], field, "{}", r.text());
        }
    }
    // Not JSON at all.
    let r = daemon
        .http
        .post(format!("{}/v1/teams", daemon.base))
        .bearer_auth(&daemon.admin)
        .header("content-type", "application/json")
        .body("{name")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// Runs `leadpipe` with the daemon's config and returns (success, stdout, stderr).
fn cli(daemon: &TestDaemon, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_leadpipe"))
        .arg("--config")
        .arg(&daemon.config_path)
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run leadpipe");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_the_command_line_works_once_printed_and_stops_when_revoked() {
    let daemon = TestDaemon::start().await;
    let (ok, out, err) = cli(
        &daemon,
        &[
            "user",
            "add",
            "--name",
            "Lucia Bianchi",
            "--email",
            "Lucia@Example.IT",
            "--team",
            "Vendite",
            "--time-zone",
            "Europe/Rome",
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("Created team"), "{out}");
    assert!(out.contains("lucia@example.it"), "{out}");
    let (ok, _, err) = cli(
        &daemon,
        &[
            "user",
            "add",
            "--name",
            "X",
            "--email",
            "x@y.it",
            "--time-zone",
            "Rome",
        ],
    );
    assert!(!ok);
    assert!(err.contains("time_zone"), "{err}");

    let (ok, out, err) = cli(
        &daemon,
        &[
            "token",
            "create",
            "--user",
            "LUCIA@example.it",
            "--role",
            "agent",
            "--label",
            "laptop",
        ],
    );
    assert!(ok, "{out}{err}");
    let secret = out.trim().to_owned();
    assert!(
        secret.starts_with("lp_") && !secret.contains(char::is_whitespace),
        "stdout is the token alone: {out}"
    );
    assert!(!err.contains(&secret), "the token is not on stderr: {err}");

    let me = daemon.call_as(Some(&secret), "GET", "/v1/me", None).await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["role"], "agent");
    assert_eq!(me.json()["user"]["email"], "lucia@example.it");
    assert_eq!(me.json()["user"]["time_zone"], "Europe/Rome");
    // An agent is an agent: no people management.
    daemon
        .call_as(Some(&secret), "GET", "/v1/users", None)
        .await
        .assert_error(403, "forbidden");

    let (ok, listing, err) = cli(&daemon, &["token", "list"]);
    assert!(ok, "{err}");
    assert!(!listing.contains(&secret), "never the secret: {listing}");
    assert!(listing.contains(&secret[..11]), "the prefix: {listing}");
    assert!(listing.contains("lucia@example.it") && listing.contains("laptop"));
    let id = listing.split_whitespace().next().unwrap().to_owned();

    let (ok, out, err) = cli(&daemon, &["token", "revoke", &id]);
    assert!(ok, "{out}{err}");
    daemon
        .call_as(Some(&secret), "GET", "/v1/me", None)
        .await
        .assert_error(401, "bad_token");
    let (ok, _, err) = cli(&daemon, &["token", "revoke", "98765"]);
    assert!(!ok && err.contains("98765"), "{err}");
    let (ok, _, err) = cli(
        &daemon,
        &[
            "token",
            "create",
            "--user",
            "nobody@example.it",
            "--role",
            "agent",
        ],
    );
    assert!(!ok && err.contains("user add"), "{err}");

    // Deactivating the user stops their other tokens at once.
    let (ok, out, _) = cli(
        &daemon,
        &[
            "token",
            "create",
            "--user",
            "lucia@example.it",
            "--role",
            "supervisor",
        ],
    );
    assert!(ok);
    let second = out.trim().to_owned();
    assert_eq!(
        daemon
            .call_as(Some(&second), "GET", "/v1/me", None)
            .await
            .status,
        200
    );
    let user_id = me.json()["user"]["id"].as_i64().unwrap();
    let r = daemon
        .call_as(
            Some(&daemon.admin),
            "PATCH",
            &format!("/v1/users/{user_id}"),
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    daemon
        .call_as(Some(&second), "GET", "/v1/me", None)
        .await
        .assert_error(401, "bad_token");
    let tokens = daemon.get(&format!("/v1/users/{user_id}/tokens")).await;
    assert_eq!(tokens.json()["items"].as_array().unwrap().len(), 2);
    assert!(!tokens.text().contains(&second), "listings carry no secret");

    // No secret reached the daemon's log either.
    assert!(!daemon.log().contains(&secret) && !daemon.log().contains(&second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_user_tokens_open_the_api_and_a_dead_database_never_lets_one_pass() {
    let mut daemon = TestDaemon::prepare_with(Options::default()).await;
    let config = std::fs::read_to_string(&daemon.config_path).unwrap();
    let without: String = config
        .lines()
        .filter(|l| !l.starts_with("admin_token"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(config, without, "the admin token line is gone");
    std::fs::write(&daemon.config_path, without).unwrap();
    daemon.launch(true).await;

    // Nobody can use the API yet.
    daemon
        .call_as(None, "GET", "/v1/leads", None)
        .await
        .assert_error(401, "api_disabled");
    daemon
        .call_as(Some(&daemon.admin), "GET", "/v1/leads", None)
        .await
        .assert_error(401, "bad_token");

    let (ok, out, err) = cli(
        &daemon,
        &[
            "user",
            "add",
            "--name",
            "Root",
            "--email",
            "root@example.it",
        ],
    );
    assert!(ok, "{out}{err}");
    let (ok, out, err) = cli(
        &daemon,
        &[
            "token",
            "create",
            "--user",
            "root@example.it",
            "--role",
            "admin",
        ],
    );
    assert!(ok, "{out}{err}");
    let secret = out.trim().to_owned();
    daemon
        .call_as(None, "GET", "/v1/leads", None)
        .await
        .assert_error(401, "missing_token");
    let r = daemon
        .call_as(Some(&secret), "GET", "/v1/users", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // With the database gone a user token cannot be checked: 503, never a pass.
    daemon.kill();
    daemon.env.push((
        "LEADPIPE__DATABASE__URL".into(),
        "postgres://postgres@127.0.0.1:1/leadpipe".into(),
    ));
    daemon.launch(false).await;
    let r = daemon.call_as(Some(&secret), "GET", "/v1/me", None).await;
    r.assert_error(503, "database_unavailable");
    assert!(r.headers.contains_key("retry-after"));
}
