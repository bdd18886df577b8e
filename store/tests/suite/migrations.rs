//! Schema changes applied to a database that already holds leads, and the server
//! settings the schema's query plans rely on.

use crate::support;

use sqlx::PgPool;
use sqlx::migrate::Migrate;
use store::Store;
use support::{database_name, execute, own_store};

/// Applies every migration below `version`, as a database of an earlier release has them.
async fn migrate_below(pool: &PgPool, version: i64) {
    let mut conn = pool.acquire().await.unwrap();
    conn.ensure_migrations_table().await.unwrap();
    for migration in store::MIGRATOR.iter().filter(|m| m.version < version) {
        conn.apply(migration).await.unwrap();
    }
}

async fn migrate_from(pool: &PgPool, version: i64) {
    let mut conn = pool.acquire().await.unwrap();
    for migration in store::MIGRATOR.iter().filter(|m| m.version >= version) {
        conn.apply(migration).await.unwrap();
    }
}

#[sqlx::test(migrations = false)]
async fn merges_filed_before_keep_only_the_keys_a_strong_match_brought(pool: PgPool) {
    migrate_below(&pool, 4).await;
    // A lead opened by anna@ and a switchboard number, then one merge by that number
    // (bringing giulia.bruni@) and one by anna@ (bringing her mobile), with every key made a
    // look-up key, as earlier releases did.
    sqlx::raw_sql(
        r#"
        INSERT INTO inquiries (id, channel, source, received_at, disposition, payload, raw_body)
        VALUES
          ('00000000-0000-0000-0000-000000000001', 'form', 'web', now(), 'lead',
           '{"normalized": {"identity_keys": ["email:anna@studio.example.it", "phone:+390287361234"]}}', ''),
          ('00000000-0000-0000-0000-000000000002', 'form', 'web', now(), 'merged',
           '{"normalized": {"identity_keys": ["email:giulia.bruni@studio.example.it", "phone:+390287361234"]}}', ''),
          ('00000000-0000-0000-0000-000000000003', 'form', 'web', now(), 'merged',
           '{"normalized": {"identity_keys": ["email:anna@studio.example.it", "phone:+393475550101"]}}', '');
        INSERT INTO leads (id, inquiry_id, title, channel, source, pipeline_id, stage_id, stage_entered_at)
        SELECT 1, '00000000-0000-0000-0000-000000000001', 'Anna', 'form', 'web', p.id, s.id, now()
        FROM pipelines p JOIN stages s ON s.pipeline_id = p.id AND s.is_initial;
        INSERT INTO lead_events (id, lead_id, kind, inquiry_id, data) VALUES
          (10, 1, 'merged', '00000000-0000-0000-0000-000000000002',
           '{"match": {"rule": "open_lead", "key": "phone:+390287361234", "target": "lead 1"}}'),
          (11, 1, 'merged', '00000000-0000-0000-0000-000000000003',
           '{"match": {"rule": "open_lead", "key": "email:anna@studio.example.it", "target": "lead 1"}}');
        INSERT INTO lead_identities (key, lead_id) VALUES
          ('email:anna@studio.example.it', 1), ('phone:+390287361234', 1),
          ('email:giulia.bruni@studio.example.it', 1), ('phone:+393475550101', 1);
        "#,
    )
    .execute(&pool)
    .await
    .unwrap();

    migrate_from(&pool, 4).await;

    let keys: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT key, added_by_event FROM lead_identities WHERE lead_id = 1 ORDER BY key",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        keys,
        vec![
            ("email:anna@studio.example.it".to_owned(), None),
            ("phone:+390287361234".to_owned(), None),
            ("phone:+393475550101".to_owned(), Some(11)),
        ]
    );
    let recorded: Vec<(i64, String, bool)> =
        sqlx::query_as("SELECT event_id, key, adopted FROM lead_event_keys ORDER BY event_id, key")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        recorded,
        vec![
            (10, "email:giulia.bruni@studio.example.it".to_owned(), false),
            (10, "phone:+390287361234".to_owned(), false),
            (11, "email:anna@studio.example.it".to_owned(), true),
            (11, "phone:+393475550101".to_owned(), true),
        ]
    );
}

#[sqlx::test(migrations = false)]
async fn activities_filed_before_say_what_they_record_by_their_channel(pool: PgPool) {
    migrate_below(&pool, 6).await;
    sqlx::raw_sql(
        r#"
        INSERT INTO inquiries (id, channel, source, received_at, disposition, payload, raw_body)
        VALUES
          ('00000000-0000-0000-0000-000000000001', 'form', 'web', now(), 'lead', '{}', ''),
          ('00000000-0000-0000-0000-000000000002', 'import', 'import:crm.csv', now(), 'merged', '{}', '');
        INSERT INTO leads (id, inquiry_id, title, channel, source, pipeline_id, stage_id, stage_entered_at)
        SELECT 1, '00000000-0000-0000-0000-000000000001', 'Anna', 'form', 'web', p.id, s.id, now()
        FROM pipelines p JOIN stages s ON s.pipeline_id = p.id AND s.is_initial;
        INSERT INTO activities (lead_id, kind, channel, inquiry_id, occurred_at) VALUES
          (1, 'inquiry', 'form', '00000000-0000-0000-0000-000000000001', now()),
          (1, 'inquiry', 'import', '00000000-0000-0000-0000-000000000002', now()),
          (1, 'task', NULL, NULL, now());
        "#,
    )
    .execute(&pool)
    .await
    .unwrap();

    migrate_from(&pool, 6).await;

    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM activities ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(kinds, ["form", "import", "task"]);
    let tags: Vec<String> = sqlx::query_scalar("SELECT tags FROM leads WHERE id = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(tags.is_empty());
}

#[sqlx::test]
async fn the_store_names_each_setting_that_keeps_autovacuum_from_analysing(pool: PgPool) {
    // The server's own setting (this machine's may have autovacuum off): whatever it is,
    // the store must report it as it is.
    let autovacuum: String = sqlx::query_scalar("SHOW autovacuum")
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut expected = Vec::new();
    if autovacuum != "on" {
        expected.push(format!("autovacuum = {autovacuum}"));
    }
    let store = Store::from_pool(pool.clone());
    assert_eq!(store.statistics_upkeep_off().await.unwrap(), expected);

    // Without activity counts autovacuum cannot tell which tables changed.
    let database = database_name(&pool).await;
    execute(
        &pool,
        &format!("ALTER DATABASE \"{database}\" SET track_counts = off"),
    )
    .await;
    expected.push("track_counts = off".into());
    assert_eq!(
        own_store(&pool).statistics_upkeep_off().await.unwrap(),
        expected
    );
}
