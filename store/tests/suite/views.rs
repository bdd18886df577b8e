//! Lists, edits and bulk changes seen through each role's scope, on a real database.

use std::collections::BTreeSet;

use sqlx::PgPool;
use store::{Actor, EditError, LeadPatch, LeadQuery, Role, Scope, Store};

async fn team(pool: &PgPool, name: &str) -> i64 {
    sqlx::query_scalar("INSERT INTO teams (name) VALUES ($1) RETURNING id")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn user(pool: &PgPool, name: &str, team: i64, active: bool) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO users (name, email, team_id, active) VALUES ($1, $1 || '@example.com', $2, $3)
         RETURNING id",
    )
    .bind(name)
    .bind(team)
    .bind(active)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A lead in the default pipeline's initial stage, straight into the tables.
async fn lead(pool: &PgPool, name: &str, responsible: Option<i64>) -> i64 {
    let inquiry = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO inquiries (id, channel, source, received_at, disposition, payload, raw_body)
         VALUES ($1, 'form', 'web-test', now(), 'lead', '{}', ''::bytea)",
    )
    .bind(inquiry)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query_scalar(
        "INSERT INTO leads (inquiry_id, title, name, channel, source, pipeline_id, stage_id,
                            stage_entered_at, responsible_id)
         SELECT $1, $2, $2, 'form', 'web-test', p.id, s.id, now(), $3
         FROM pipelines p JOIN stages s ON s.pipeline_id = p.id AND s.is_initial
         WHERE p.code = 'default'
         RETURNING id",
    )
    .bind(inquiry)
    .bind(name)
    .bind(responsible)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn listed(store: &Store, scope: Scope) -> BTreeSet<i64> {
    let page = store
        .list_leads(
            &scope,
            &LeadQuery {
                limit: 100,
                ..LeadQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.total as usize, page.items.len());
    page.items.iter().map(|l| l.id).collect()
}

fn editor(role: Role, user_id: i64) -> Actor {
    Actor {
        role,
        user_id: Some(user_id),
    }
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn each_role_sees_edits_and_moves_only_the_leads_of_its_scope(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let (north, south) = (team(&pool, "North").await, team(&pool, "South").await);
    let boss = user(&pool, "boss", north, true).await;
    let ada = user(&pool, "ada", north, true).await;
    let old = user(&pool, "old", north, false).await;
    let sam = user(&pool, "sam", south, true).await;
    let adas = lead(&pool, "Ada's lead", Some(ada)).await;
    let sams = lead(&pool, "Sam's lead", Some(sam)).await;
    let queue = lead(&pool, "Unassigned", None).await;
    let bosss = lead(&pool, "Boss's lead", Some(boss)).await;

    assert_eq!(
        listed(&store, Scope::Own { user_id: ada }).await,
        BTreeSet::from([adas])
    );
    assert_eq!(
        listed(&store, Scope::Team { user_id: boss }).await,
        BTreeSet::from([adas, queue, bosss])
    );
    assert_eq!(listed(&store, Scope::All).await.len(), 4);
    assert!(
        store
            .get_lead(&Scope::Own { user_id: ada }, sams)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get_lead(&Scope::Team { user_id: boss }, sams)
            .await
            .unwrap()
            .is_none()
    );

    // An agent edits their own lead, but neither another's nor who is responsible.
    let rename = LeadPatch {
        name: Some(Some("Ada Lovelace".into())),
        ..LeadPatch::default()
    };
    let agent = editor(Role::Agent, ada);
    let done = store.update_lead(&agent, adas, &rename).await.unwrap();
    assert_eq!(done.lead.name.as_deref(), Some("Ada Lovelace"));
    assert!(matches!(
        store.update_lead(&agent, sams, &rename).await,
        Err(EditError::NotFound(_))
    ));
    let reassign = |to: Option<i64>| LeadPatch {
        responsible_id: Some(to),
        ..LeadPatch::default()
    };
    assert!(matches!(
        store.update_lead(&agent, adas, &reassign(Some(boss))).await,
        Err(EditError::Forbidden(_))
    ));

    // A supervisor assigns within the team only, and only active users.
    let supervisor = editor(Role::Supervisor, boss);
    assert!(matches!(
        store
            .update_lead(&supervisor, queue, &reassign(Some(sam)))
            .await,
        Err(EditError::Forbidden(_))
    ));
    assert!(matches!(
        store
            .update_lead(&supervisor, queue, &reassign(Some(old)))
            .await,
        Err(EditError::Invalid {
            field: "responsible_id",
            ..
        })
    ));
    assert!(matches!(
        store.update_lead(&supervisor, sams, &reassign(None)).await,
        Err(EditError::NotFound(_))
    ));
    let assigned = store
        .update_lead(&supervisor, queue, &reassign(Some(ada)))
        .await
        .unwrap();
    assert_eq!(
        assigned.lead.responsible.map(|u| u.name),
        Some("ada".into())
    );

    // A bulk move reaches the supervisor's scope and nothing else.
    let all = LeadQuery::default();
    let outcome = store
        .bulk_move(&supervisor, &all, "working", Some("team push"))
        .await
        .unwrap();
    assert_eq!((outcome.matched, outcome.changed), (3, 3));
    let sams_now = store.get_lead(&Scope::All, sams).await.unwrap().unwrap();
    assert_eq!(sams_now.lead.stage.code, "open");
    let history: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM lead_stage_history WHERE changed_by = $1 AND reason = 'team push'",
    )
    .bind(format!("user:{boss}"))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(history, 3);
    // Agents cannot assign in bulk either.
    assert!(matches!(
        store.bulk_assign(&agent, &all, Some(ada)).await,
        Err(EditError::Forbidden(_))
    ));
}
