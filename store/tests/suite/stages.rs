//! Pipelines, stage moves and finishing leads, against a real database.

use crate::support;

use router::{BatchSink, StoreOutcome};
use sqlx::PgPool;
use store::{
    ConvertItem, Finish, LinkResult, NewDeal, PipelineKind, PipelineSpec, Scope, Semantic,
    StagePatch, StageSpec, Store, WorkError,
};
use support::{count, envelope, inquiry};

async fn lead(
    store: &Store,
    name: Option<&str>,
    email: Option<&str>,
    phone: Option<&str>,
    company: Option<&str>,
) -> i64 {
    let e = envelope(inquiry(name, email, phone, company));
    let outcomes = store.store_batch(&[&e]).await.unwrap();
    match &outcomes[0] {
        StoreOutcome::LeadCreated { lead_id } => *lead_id,
        other => panic!("expected a new lead, got {other:?}"),
    }
}

fn code_of(error: &WorkError) -> &'static str {
    match error {
        WorkError::Conflict { code, .. } | WorkError::Invalid { code, .. } => code,
        WorkError::NotFound(_) => "not_found",
        WorkError::Store(e) => panic!("database error: {e}"),
    }
}

fn stage(code: &str, semantic: Semantic, initial: bool) -> StageSpec {
    StageSpec {
        code: code.into(),
        name: code.to_uppercase(),
        color: "#123abc".into(),
        semantic,
        deadline_days: 2,
        initial,
        active: true,
        order: None,
    }
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_move_is_recorded_and_a_finished_lead_does_not_move(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let id = lead(
        &store,
        Some("Anna"),
        Some("anna@rossi.example.it"),
        None,
        None,
    )
    .await;

    let moved = store
        .move_lead_stage(&Scope::All, id, "working", Some("called"), "user:7")
        .await
        .unwrap();
    assert_eq!(
        (moved.from.as_str(), moved.to.as_str()),
        ("open", "working")
    );
    let (by, reason): (String, Option<String>) = sqlx::query_as(
        "SELECT changed_by, reason FROM lead_stage_history WHERE lead_id = $1 AND from_stage_id IS NOT NULL",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((by.as_str(), reason.as_deref()), ("user:7", Some("called")));

    for (target, code) in [
        ("qualified", "use_finish"),
        ("junk", "use_finish"),
        ("won", "stage_of_another_pipeline"),
        ("nowhere", "unknown_stage"),
        ("working", "same_stage"),
    ] {
        let error = store
            .move_lead_stage(&Scope::All, id, target, None, "admin")
            .await
            .unwrap_err();
        assert_eq!(code_of(&error), code, "{target}: {error}");
    }
    // Out of an agent's scope the lead does not exist.
    let error = store
        .move_lead_stage(&Scope::Own { user_id: 999 }, id, "open", None, "user:999")
        .await
        .unwrap_err();
    assert_eq!(code_of(&error), "not_found");

    store
        .move_lead_stage(&Scope::All, id, "ignored", None, "admin")
        .await
        .unwrap();
    let error = store
        .move_lead_stage(&Scope::All, id, "working", None, "admin")
        .await
        .unwrap_err();
    assert_eq!(code_of(&error), "lead_finished");
    assert!(error.to_string().contains("reopen"), "{error}");

    let reopened = store
        .reopen_lead(id, "working", Some("called back"), "admin")
        .await
        .unwrap();
    assert_eq!(reopened.from, "ignored");
    let events = count(
        &pool,
        &format!("SELECT count(*) FROM lead_events WHERE lead_id = {id} AND kind = 'reopened'"),
    )
    .await;
    assert_eq!(events, 1);
    let closed: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT closed_at FROM leads WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(closed.is_none());
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_stage_holding_leads_is_not_removed_and_renaming_keeps_history(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let a = lead(&store, None, Some("a@one.example.it"), None, None).await;
    let b = lead(&store, None, Some("b@two.example.it"), None, None).await;
    for id in [a, b] {
        store
            .move_lead_stage(&Scope::All, id, "working", None, "admin")
            .await
            .unwrap();
    }
    let error = store.remove_stage("default", "working").await.unwrap_err();
    assert_eq!(code_of(&error), "stage_in_use");
    assert!(error.to_string().contains("2 leads"), "{error}");

    let renamed = store
        .update_stage(
            "default",
            "working",
            &StagePatch {
                name: Some("In progress".into()),
                order: Some(35),
                ..StagePatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((renamed.name.as_str(), renamed.order), ("In progress", 35));
    let history: i64 = count(
        &pool,
        &format!(
            "SELECT count(*) FROM lead_stage_history h WHERE h.to_stage_id = {}",
            renamed.id
        ),
    )
    .await;
    assert_eq!(history, 2, "history points at the renamed stage");

    // A stage leads are worked in cannot become a finished one while it holds leads.
    let error = store
        .update_stage(
            "default",
            "working",
            &StagePatch {
                semantic: Some(Semantic::Success),
                ..StagePatch::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code_of(&error), "stage_in_use");

    for id in [a, b] {
        store
            .move_lead_stage(&Scope::All, id, "attempting_contact", None, "admin")
            .await
            .unwrap();
    }
    let removed = store.remove_stage("default", "working").await.unwrap();
    assert!(removed.removed_at.is_some() && !removed.active);
    let error = store
        .move_lead_stage(&Scope::All, a, "working", None, "admin")
        .await
        .unwrap_err();
    assert_eq!(code_of(&error), "stage_removed");
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn sync_upserts_by_code_and_keeps_a_dropped_stage_that_holds_leads(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let id = lead(&store, None, Some("c@three.example.it"), None, None).await;
    store
        .move_lead_stage(&Scope::All, id, "working", None, "admin")
        .await
        .unwrap();
    let spec = PipelineSpec {
        code: "default".into(),
        name: "Leads".into(),
        kind: PipelineKind::Lead,
        stages: vec![
            stage("new", Semantic::Open, true),
            stage("open", Semantic::Open, false),
            stage("won", Semantic::Success, false),
            stage("junk", Semantic::Failure, false),
        ],
    };
    assert!(spec.problems().is_empty(), "{:?}", spec.problems());
    let notes = store.sync_pipelines(&[spec]).await.unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("`working`") && notes[0].contains("1 lead"),
        "{notes:?}"
    );
    let pipeline = store.get_pipeline("default").await.unwrap().unwrap();
    let get = |code: &str| pipeline.stages.iter().find(|s| s.code == code).unwrap();
    assert!(get("new").initial && !get("open").initial);
    assert!(get("working").removed_at.is_none(), "holds a lead: kept");
    assert!(
        get("ignored").removed_at.is_some(),
        "empty and dropped: removed"
    );
    assert_eq!(get("open").order, 20);
    assert_eq!(get("new").color, "#123ABC");
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_conversion_makes_each_client_once_and_a_repeat_lead_only_a_deal(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let first = lead(
        &store,
        Some("Giulia Bianchi"),
        Some("giulia@bianchi-arredi.example.it"),
        None,
        Some("Bianchi Arredi S.r.l."),
    )
    .await;
    // A colleague writes in before Giulia's lead is converted: neither lead knows the firm.
    let colleague = lead(
        &store,
        Some("Marco Bianchi"),
        Some("marco@bianchi-arredi.example.it"),
        None,
        Some("Bianchi Arredi"),
    )
    .await;
    let outcome = store
        .finish_lead(
            &Scope::All,
            first,
            &Finish::Converted(vec![
                ConvertItem::Contact { name: None },
                ConvertItem::Company {
                    name: None,
                    domain: None,
                },
                ConvertItem::Deal(NewDeal {
                    amount: Some("1200.50".into()),
                    currency: Some("EUR".into()),
                    ..NewDeal::default()
                }),
            ]),
            "admin",
        )
        .await
        .unwrap();
    let contact = outcome.contact.unwrap();
    let company = outcome.company.unwrap();
    assert_eq!(contact.result, LinkResult::Created);
    assert_eq!(company.result, LinkResult::Created);
    let deal = outcome.deal.unwrap();
    assert_eq!(deal.amount.as_deref(), Some("1200.50"));
    assert_eq!(
        (deal.pipeline.as_str(), deal.stage.as_str()),
        ("deals", "new")
    );
    assert_eq!(outcome.stage_move.to, "qualified");
    let works_for: Option<i64> =
        sqlx::query_scalar("SELECT company_id FROM contacts WHERE id = $1")
            .bind(contact.id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(works_for, Some(company.id));

    // Converting the colleague's lead: the firm is known by now, so it is linked, not made.
    let outcome = store
        .finish_lead(
            &Scope::All,
            colleague,
            &Finish::Converted(vec![
                ConvertItem::Contact { name: None },
                ConvertItem::Company {
                    name: None,
                    domain: None,
                },
            ]),
            "admin",
        )
        .await
        .unwrap();
    assert_eq!(outcome.contact.unwrap().result, LinkResult::Created);
    let linked = outcome.company.unwrap();
    assert_eq!(
        (linked.id, linked.result),
        (company.id, LinkResult::LinkedExisting)
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM companies").await, 1);

    // A later inquiry from the firm is a repeat lead: it converts to a deal only.
    let third = lead(
        &store,
        Some("Sara Bianchi"),
        Some("sara@bianchi-arredi.example.it"),
        None,
        None,
    )
    .await;
    let error = store
        .finish_lead(
            &Scope::All,
            third,
            &Finish::Converted(vec![ConvertItem::Contact { name: None }]),
            "admin",
        )
        .await
        .unwrap_err();
    assert_eq!(code_of(&error), "repeat_lead");
    let outcome = store
        .finish_lead(
            &Scope::All,
            third,
            &Finish::Converted(vec![ConvertItem::Deal(NewDeal::default())]),
            "admin",
        )
        .await
        .unwrap();
    let client = outcome.company.unwrap();
    assert_eq!(
        (client.id, client.result),
        (company.id, LinkResult::ExistingClient)
    );
    assert_eq!(outcome.deal.unwrap().company_id, Some(company.id));
    assert_eq!(count(&pool, "SELECT count(*) FROM contacts").await, 2);

    // Finishing twice is refused.
    let error = store
        .finish_lead(&Scope::All, first, &Finish::Converted(vec![]), "admin")
        .await
        .unwrap_err();
    assert_eq!(code_of(&error), "lead_finished");
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn two_conversions_of_one_new_person_at_once_make_one_contact(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let a = lead(
        &store,
        Some("Piotr Nowak"),
        Some("piotr@nowak.example.pl"),
        None,
        None,
    )
    .await;
    let b = lead(
        &store,
        Some("Piotr Nowak"),
        Some("p.nowak@other.example.pl"),
        None,
        None,
    )
    .await;
    // The second lead carries the first one's address too (written in the message, say):
    // both leads are the same new person.
    sqlx::query(
        "INSERT INTO lead_identities (key, lead_id) VALUES ('email:piotr@nowak.example.pl', $1)",
    )
    .bind(b)
    .execute(&pool)
    .await
    .unwrap();
    // Hold the person's lock so both conversions queue up behind it, then let them go.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind("person\u{1f}email:piotr@nowak.example.pl")
        .execute(&mut *holder)
        .await
        .unwrap();
    let convert = |id: i64| {
        let store = store.clone();
        async move {
            store
                .finish_lead(
                    &Scope::All,
                    id,
                    &Finish::Converted(vec![ConvertItem::Contact { name: None }]),
                    "admin",
                )
                .await
        }
    };
    let first = tokio::spawn(convert(a));
    let second = tokio::spawn(convert(b));
    let waiting = || async {
        count(
            &pool,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'",
        )
        .await
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while waiting().await < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "both conversions wait on the lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    holder.commit().await.unwrap();
    let results = [
        first.await.unwrap().unwrap(),
        second.await.unwrap().unwrap(),
    ];
    let mut kinds: Vec<LinkResult> = results
        .iter()
        .map(|r| r.contact.as_ref().unwrap().result)
        .collect();
    kinds.sort_by_key(|k| *k == LinkResult::Created);
    assert_eq!(kinds, [LinkResult::LinkedExisting, LinkResult::Created]);
    assert_eq!(
        results[0].contact.as_ref().unwrap().id,
        results[1].contact.as_ref().unwrap().id
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM contacts").await, 1);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_pipeline_is_created_and_its_stages_reordered(pool: PgPool) {
    let store = Store::from_pool(pool);
    let spec = PipelineSpec {
        code: "partners".into(),
        name: "Partners".into(),
        kind: PipelineKind::Lead,
        stages: vec![
            stage("new", Semantic::Open, true),
            stage("signed", Semantic::Success, false),
        ],
    };
    let created = store.create_pipeline(&spec).await.unwrap();
    assert_eq!(created.stages.len(), 2);
    let error = store.create_pipeline(&spec).await.unwrap_err();
    assert_eq!(code_of(&error), "pipeline_exists");
    store
        .add_stage("partners", &stage("lost", Semantic::Failure, false))
        .await
        .unwrap();
    let error = store
        .add_stage("partners", &stage("lost", Semantic::Failure, false))
        .await
        .unwrap_err();
    assert_eq!(code_of(&error), "stage_exists");
    let error = store
        .reorder_stages("partners", &["lost".into(), "new".into()])
        .await
        .unwrap_err();
    assert_eq!(code_of(&error), "bad_order");
    let reordered = store
        .reorder_stages("partners", &["lost".into(), "new".into(), "signed".into()])
        .await
        .unwrap();
    let codes: Vec<&str> = reordered.stages.iter().map(|s| s.code.as_str()).collect();
    assert_eq!(codes, ["lost", "new", "signed"]);
    let error = store.remove_stage("partners", "new").await.unwrap_err();
    assert_eq!(code_of(&error), "initial_stage");
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_shared_phone_does_not_link_an_evidently_different_person(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let anna = lead(
        &store,
        Some("Anna Conti"),
        Some("anna@studio.example.it"),
        Some("02 8736 1234"),
        None,
    )
    .await;
    let bruno = lead(
        &store,
        Some("Bruno Sala"),
        Some("bruno@studio.example.it"),
        Some("02 8736 1234"),
        None,
    )
    .await;
    let contact = |id: i64| {
        let store = store.clone();
        async move {
            store
                .finish_lead(
                    &Scope::All,
                    id,
                    &Finish::Converted(vec![ConvertItem::Contact { name: None }]),
                    "admin",
                )
                .await
                .unwrap()
                .contact
                .unwrap()
        }
    };
    let first = contact(anna).await;
    let second = contact(bruno).await;
    assert_eq!(first.result, LinkResult::Created);
    assert_eq!(
        second.result,
        LinkResult::Created,
        "another person on one number"
    );
    assert_ne!(first.id, second.id);
    let owner: i64 = sqlx::query_scalar(
        "SELECT contact_id FROM contact_identities WHERE key = 'phone:+390287361234'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(owner, first.id, "the number stays with its first contact");
    let bruno_keys = count(
        &pool,
        &format!(
            "SELECT count(*) FROM contact_identities WHERE contact_id = {} AND key = 'email:bruno@studio.example.it'",
            second.id
        ),
    )
    .await;
    assert_eq!(bruno_keys, 1);
}
