//! The per-lead summary the reports and the activity view read (migration 0015) stays
//! equal to a recomputation from leads, their stage history and their activities after
//! every kind of writer has been at work.

use crate::support;

use chrono::{Duration, Utc};
use router::{BatchSink, StoreOutcome};
use sqlx::{PgConnection, PgPool};
use store::{
    ActivityChange, Actor, ConvertItem, Finish, LeadPatch, LeadQuery, NewActivity, Role, Scope,
    Store,
};
use support::{envelope, inquiry};

const ADMIN: Actor = Actor {
    role: Role::Admin,
    user_id: None,
};

/// What lead_summary must hold, computed from scratch with correlated subqueries
/// (deliberately not the triggers' view), in the table's column order.
const RECOMPUTED: &str = "
    SELECT l.id, l.pipeline_id, l.created_at, l.source, l.channel, l.responsible_id,
           l.stage_id, l.junk_reason,
           coalesce((SELECT array_agg(h.to_stage_id ORDER BY h.changed_at, h.id)
                     FROM lead_stage_history h WHERE h.lead_id = l.id), '{}') AS stay_stage,
           coalesce((SELECT array_agg(extract(epoch FROM n.next_at - n.changed_at)::float8
                                      ORDER BY n.changed_at, n.id)
                     FROM (SELECT h.id, h.changed_at,
                                  lead(h.changed_at) OVER (ORDER BY h.changed_at, h.id) AS next_at
                           FROM lead_stage_history h WHERE h.lead_id = l.id) n
                     WHERE n.next_at IS NOT NULL), '{}') AS stay_secs,
           (SELECT max(h.changed_at) FROM lead_stage_history h WHERE h.lead_id = l.id) AS last_at,
           coalesce((SELECT array_agg(DISTINCT h.to_stage_id)
                     FROM lead_stage_history h WHERE h.lead_id = l.id), '{}') AS reached,
           (SELECT min(a.due_at) FROM activities a
            WHERE a.lead_id = l.id AND NOT a.done AND a.due_at IS NOT NULL) AS next_due
    FROM leads l";

const STORED: &str = "
    SELECT lead_id, pipeline_id, created_at, source, channel, responsible_id, stage_id,
           junk_reason, stay_stage, stay_secs, last_at, reached, next_due
    FROM lead_summary";

/// Rows on one side and not the other, both ways, as text for the failure message.
async fn differences(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(&format!(
        "(SELECT 'stored only: ' || x::text FROM ({STORED} EXCEPT {RECOMPUTED}) x)
         UNION ALL
         (SELECT 'expected only: ' || x::text FROM ({RECOMPUTED} EXCEPT {STORED}) x)"
    ))
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn new_lead(store: &Store, name: &str) -> i64 {
    let email = format!("{}@summary.example.com", name.to_lowercase());
    let e = envelope(inquiry(Some(name), Some(&email), None, None));
    match &store.store_batch(&[&e]).await.unwrap()[0] {
        StoreOutcome::LeadCreated { lead_id } => *lead_id,
        other => panic!("expected a new lead, got {other:?}"),
    }
}

async fn user(pool: &PgPool, name: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO users (name, email) VALUES ($1, lower($1) || '@example.com') RETURNING id",
    )
    .bind(name)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The default pipeline's initial stage as `s`, for `SELECT ... FROM {OPEN_STAGE}`.
const OPEN_STAGE: &str = "stages s JOIN pipelines p ON p.id = s.pipeline_id
                          WHERE p.code = 'default' AND s.code = 'open'";

/// A lead written straight into the tables, without stage history.
async fn bare_lead(pool: &PgPool) -> i64 {
    sqlx::query_scalar(&format!(
        "WITH i AS (INSERT INTO inquiries (id, channel, source, received_at, disposition,
                                          payload, raw_body)
                    VALUES (gen_random_uuid(), 'form', 'web', now(), 'lead', '{{}}', '')
                    RETURNING id)
         INSERT INTO leads (inquiry_id, title, channel, source, pipeline_id, stage_id,
                            stage_entered_at)
         SELECT i.id, 'Bare', 'form', 'web', s.pipeline_id, s.id, now()
         FROM i, {OPEN_STAGE}
         RETURNING id"
    ))
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Gives `lead` one stage-history row into the open stage at `at`, as a writer outside
/// the store's code would.
async fn add_open_history(conn: &mut PgConnection, lead: i64, at: chrono::DateTime<Utc>) {
    sqlx::query(&format!(
        "INSERT INTO lead_stage_history (lead_id, to_stage_id, changed_at, changed_by)
         SELECT $1, s.id, $2, 'import' FROM {OPEN_STAGE}"
    ))
    .bind(lead)
    .bind(at)
    .execute(conn)
    .await
    .unwrap();
}

fn call(due: chrono::DateTime<Utc>) -> NewActivity {
    NewActivity {
        kind: "call".into(),
        subject: "Call back".into(),
        body: None,
        due_at: due,
        assignee_id: None,
        duration_minutes: None,
    }
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_summary_follows_every_writer(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let ana = user(&pool, "Ana").await;
    let bob = user(&pool, "Bob").await;
    let admin = ADMIN;
    let mut leads = Vec::new();
    for name in ["Anna", "Bruno", "Carla", "Dario", "Elena", "Fabio"] {
        leads.push(new_lead(&store, name).await);
    }
    let [a, b, c, d, e, f] = leads[..] else {
        unreachable!()
    };
    assert!(differences(&pool).await.is_empty(), "after intake");

    // Stage moves, a junk finish and its reopening, a conversion.
    store
        .move_lead_stage(&Scope::All, a, "working", None, "admin")
        .await
        .unwrap();
    store
        .move_lead_stage(&Scope::All, b, "attempting_contact", None, "admin")
        .await
        .unwrap();
    store
        .finish_lead(
            &Scope::All,
            b,
            &Finish::Junk {
                reason: "spam".into(),
                note: None,
            },
            "admin",
        )
        .await
        .unwrap();
    store
        .reopen_lead(b, "working", Some("called back"), "admin")
        .await
        .unwrap();
    store
        .finish_lead(
            &Scope::All,
            c,
            &Finish::Converted(vec![ConvertItem::Contact { name: None }]),
            "admin",
        )
        .await
        .unwrap();
    assert!(differences(&pool).await.is_empty(), "after moves");

    // Bulk edits over several leads at once, and a single edit.
    let some = LeadQuery {
        limit: 50,
        ..LeadQuery::default()
    };
    store.bulk_assign(&admin, &some, Some(ana)).await.unwrap();
    store
        .bulk_move(&admin, &some, "attempting_contact", Some("sweep"))
        .await
        .unwrap();
    let patch = LeadPatch {
        responsible_id: Some(Some(bob)),
        ..LeadPatch::default()
    };
    store.update_lead(&admin, d, &patch).await.unwrap();
    assert!(differences(&pool).await.is_empty(), "after bulk edits");

    // Planned work: added, rescheduled, completed; the earliest open one counts.
    let now = Utc::now();
    let first = store
        .add_activity(&ADMIN, e, &call(now + Duration::days(3)))
        .await
        .unwrap();
    store
        .add_activity(&ADMIN, e, &call(now + Duration::days(5)))
        .await
        .unwrap();
    let on_f = store
        .add_activity(&ADMIN, f, &call(now - Duration::days(1)))
        .await
        .unwrap();
    let reschedule = ActivityChange {
        due_at: Some(now + Duration::days(9)),
        ..ActivityChange::default()
    };
    store
        .update_activity(&ADMIN, first.id, &reschedule)
        .await
        .unwrap();
    store
        .complete_activity(&ADMIN, on_f.id, None)
        .await
        .unwrap();
    assert!(differences(&pool).await.is_empty(), "after planned work");
    let due: Option<chrono::DateTime<Utc>> =
        sqlx::query_scalar("SELECT next_due FROM lead_summary WHERE lead_id = $1")
            .bind(f)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(due, None, "completed work is not next");

    // Writers outside the store's code: a lead without history, history written out of
    // time order, history edited and removed, a lead's pipeline columns edited.
    let bare = bare_lead(&pool).await;
    let mut conn = pool.acquire().await.unwrap();
    add_open_history(&mut conn, a, now - Duration::days(30)).await;
    sqlx::query(
        "UPDATE lead_stage_history SET changed_at = changed_at - interval '2 hours'
         WHERE lead_id = $1",
    )
    .bind(b)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "DELETE FROM lead_stage_history
         WHERE id = (SELECT max(id) FROM lead_stage_history WHERE lead_id = $1)",
    )
    .bind(d)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE leads SET source = 'phone', channel = 'call' WHERE id = $1")
        .bind(e)
        .execute(&pool)
        .await
        .unwrap();
    assert!(differences(&pool).await.is_empty(), "after direct writes");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM lead_summary WHERE lead_id = $1")
        .bind(bare)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "a lead without history has a summary");

    // First history rows, which the trigger sets without recomputing: one for the bare
    // lead, two in one statement for another bare lead, and one for a lead whose history
    // was all removed.
    let bare_too = bare_lead(&pool).await;
    add_open_history(&mut conn, bare, now - Duration::days(1)).await;
    sqlx::query(&format!(
        "INSERT INTO lead_stage_history (lead_id, to_stage_id, changed_at, changed_by)
         SELECT $1, s.id, now() - d * interval '1 hour', 'import'
         FROM generate_series(1, 2) AS d, {OPEN_STAGE}"
    ))
    .bind(bare_too)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM lead_stage_history WHERE lead_id = $1")
        .bind(f)
        .execute(&pool)
        .await
        .unwrap();
    add_open_history(&mut conn, f, Utc::now()).await;
    assert!(
        differences(&pool).await.is_empty(),
        "after first history rows"
    );

    // The rebuild an operator runs after a load that bypassed the triggers agrees too.
    sqlx::query("UPDATE lead_summary SET reached = '{}', next_due = NULL")
        .execute(&pool)
        .await
        .unwrap();
    assert!(
        !differences(&pool).await.is_empty(),
        "the comparison can fail"
    );
    sqlx::query("SELECT lead_summary_rebuild()")
        .execute(&pool)
        .await
        .unwrap();
    assert!(differences(&pool).await.is_empty(), "after a rebuild");
}

/// Two writers give one lead its first stage-history rows at once: the second waits for
/// the first's row lock, and its summary must then hold both stays, not its own alone.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn concurrent_first_history_rows_are_both_in_the_summary(pool: PgPool) {
    let lead = bare_lead(&pool).await;
    let mut first = pool.begin().await.unwrap();
    add_open_history(&mut first, lead, Utc::now() - Duration::hours(2)).await;
    let second = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            add_open_history(&mut tx, lead, Utc::now() - Duration::hours(1)).await;
            tx.commit().await.unwrap();
        }
    });
    // The second writer is now waiting for the summary row the first one locked.
    let waiting = async {
        loop {
            let blocked: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND datname = current_database()",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            if blocked > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("the second writer waits for the first");
    first.commit().await.unwrap();
    second.await.unwrap();
    let stays: Vec<i64> = sqlx::query_scalar(
        "SELECT cardinality(stay_stage)::int8 FROM lead_summary WHERE lead_id = $1",
    )
    .bind(lead)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(stays, [2], "both stays are in the summary");
    assert!(differences(&pool).await.is_empty());
}
