//! Users, teams and API tokens, and lead scopes, against a real, freshly migrated database.

use crate::support;

use std::collections::HashMap;

use router::BatchSink;
use sqlx::PgPool;
use store::{
    AckRules, ChatPlatform, ChatTarget, LeadQuery, NewReply, NewUser, Role, Scope, Store,
    StoreError, TimeZoneName, UserChanges, UserEmail,
};
use support::{created, envelope, inquiry};

fn new_user(name: &str, email: &str, team: Option<i64>) -> NewUser {
    NewUser::parse(name, email, Some("Europe/Rome"), team).unwrap()
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn users_are_created_found_by_email_changed_and_deactivated(pool: PgPool) {
    let store = Store::from_pool(pool);
    let ana = store
        .create_user(&new_user("Ana Rossi", " Ana.Rossi@Example.COM", None))
        .await
        .unwrap();
    assert_eq!(ana.email, "ana.rossi@example.com");
    assert_eq!(ana.time_zone, "Europe/Rome");
    assert!(ana.active);
    let found = store
        .find_user_by_email("ANA.ROSSI@example.com")
        .await
        .unwrap();
    assert_eq!(found.as_ref().map(|u| u.id), Some(ana.id));

    // The same address in another spelling is taken.
    let taken = store
        .create_user(&new_user("Ana Bis", "ana.rossi@EXAMPLE.com", None))
        .await
        .unwrap_err();
    assert!(
        matches!(&taken, StoreError::Conflict(m) if m.contains("email")),
        "{taken:?}"
    );
    let no_team = store
        .create_user(&new_user("Bea", "bea@example.com", Some(999)))
        .await
        .unwrap_err();
    assert!(
        matches!(&no_team, StoreError::NotFound(m) if m.contains("team_id")),
        "{no_team:?}"
    );

    let team = store.create_team("Nord").await.unwrap();
    let changed = store
        .update_user(
            ana.id,
            &UserChanges {
                name: Some("Ana Maria Rossi".into()),
                time_zone: Some(TimeZoneName::parse("America/New_York").unwrap()),
                team_id: Some(Some(team.id)),
                active: Some(false),
                ..UserChanges::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.name, "Ana Maria Rossi");
    assert_eq!(changed.email, "ana.rossi@example.com", "untouched");
    assert_eq!(changed.time_zone, "America/New_York");
    assert_eq!(changed.team_id, Some(team.id));
    assert!(!changed.active);
    let out = store
        .update_user(
            ana.id,
            &UserChanges {
                team_id: Some(None),
                email: Some(UserEmail::parse("ana@example.com").unwrap()),
                ..UserChanges::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.team_id, None);
    assert_eq!(out.email, "ana@example.com");
    assert!(
        store
            .update_user(ana.id + 100, &UserChanges::default())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.list_users().await.unwrap().len(), 1);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn teams_list_their_members_and_names_are_unique(pool: PgPool) {
    let store = Store::from_pool(pool);
    let nord = store.create_team("Nord").await.unwrap();
    let sud = store.create_team("Sud").await.unwrap();
    assert!(matches!(
        store.create_team(" Nord ").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.rename_team(sud.id, "Nord").await,
        Err(StoreError::Conflict(_))
    ));
    let ana = store
        .create_user(&new_user("Ana", "ana@example.com", Some(nord.id)))
        .await
        .unwrap();
    store
        .create_user(&new_user("Bea", "bea@example.com", Some(sud.id)))
        .await
        .unwrap();
    let renamed = store.rename_team(nord.id, "Nord-Ovest").await.unwrap();
    let renamed = renamed.unwrap();
    assert_eq!(renamed.name, "Nord-Ovest");
    assert_eq!(
        renamed.members.iter().map(|m| m.id).collect::<Vec<_>>(),
        [ana.id]
    );
    assert!(store.rename_team(sud.id + 10, "X").await.unwrap().is_none());
    let teams = store.list_teams().await.unwrap();
    assert_eq!(teams.len(), 2);
    assert_eq!(teams[1].members[0].email, "bea@example.com");
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn only_the_hash_of_a_token_is_stored_and_it_authenticates_its_user(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let ana = store
        .create_user(&new_user("Ana", "ana@example.com", None))
        .await
        .unwrap();
    let issued = store
        .create_token(ana.id, Role::Supervisor, Some("laptop"))
        .await
        .unwrap();
    assert!(issued.token.starts_with("lp_"));
    assert!(issued.token.starts_with(&issued.info.prefix));
    let (hash, prefix): (Vec<u8>, String) =
        sqlx::query_as("SELECT token_hash, prefix FROM api_tokens WHERE id = $1")
            .bind(issued.info.id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(hash, store::people::token_hash(&issued.token).to_vec());
    assert!(
        issued.token.len() > prefix.len() + 30,
        "the prefix is short"
    );
    let stored_anywhere: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_tokens WHERE prefix = $1 OR label = $1 OR encode(token_hash, 'escape') = $1",
    )
    .bind(&issued.token)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stored_anywhere, 0, "the secret itself is nowhere");

    let holder = store.authenticate(&issued.token).await.unwrap().unwrap();
    assert_eq!((holder.user_id, holder.role), (ana.id, Role::Supervisor));
    for wrong in [
        "",
        "lp_",
        &issued.token[..issued.token.len() - 1],
        &format!("{}x", issued.token),
        &issued.info.prefix,
    ] {
        assert!(
            store.authenticate(wrong).await.unwrap().is_none(),
            "{wrong}"
        );
    }
    let listed = store.list_tokens(Some(ana.id)).await.unwrap();
    assert_eq!(listed.len(), 1);
    // As issued, except that authenticating recorded the use.
    let mut expected = issued.info.clone();
    expected.last_used_at = listed[0].last_used_at;
    assert_eq!(listed[0], expected);
    assert_eq!(listed[0].label.as_deref(), Some("laptop"));
    assert!(listed[0].last_used_at.is_some(), "the use is recorded");
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn revoked_tokens_and_deactivated_users_are_refused(pool: PgPool) {
    let store = Store::from_pool(pool);
    let ana = store
        .create_user(&new_user("Ana", "ana@example.com", None))
        .await
        .unwrap();
    let first = store.create_token(ana.id, Role::Agent, None).await.unwrap();
    let second = store.create_token(ana.id, Role::Admin, None).await.unwrap();
    assert!(store.any_usable_token().await.unwrap());

    let revoked = store.revoke_token(first.info.id).await.unwrap().unwrap();
    let at = revoked.revoked_at.expect("revoked");
    assert!(store.authenticate(&first.token).await.unwrap().is_none());
    assert!(store.authenticate(&second.token).await.unwrap().is_some());
    // Revoking again keeps the first time.
    let again = store.revoke_token(first.info.id).await.unwrap().unwrap();
    assert_eq!(again.revoked_at, Some(at));
    assert!(
        store
            .revoke_token(second.info.id + 100)
            .await
            .unwrap()
            .is_none()
    );

    store
        .update_user(
            ana.id,
            &UserChanges {
                active: Some(false),
                ..UserChanges::default()
            },
        )
        .await
        .unwrap();
    assert!(store.authenticate(&second.token).await.unwrap().is_none());
    assert!(!store.any_usable_token().await.unwrap());
    assert!(matches!(
        store.create_token(ana.id, Role::Agent, None).await,
        Err(StoreError::NotFound(_))
    ));
    store
        .update_user(
            ana.id,
            &UserChanges {
                active: Some(true),
                ..UserChanges::default()
            },
        )
        .await
        .unwrap();
    assert!(store.authenticate(&second.token).await.unwrap().is_some());
    assert!(store.authenticate(&first.token).await.unwrap().is_none());
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn last_use_is_written_at_most_once_a_minute(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let ana = store
        .create_user(&new_user("Ana", "ana@example.com", None))
        .await
        .unwrap();
    let issued = store.create_token(ana.id, Role::Agent, None).await.unwrap();
    let last_used = || async {
        sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
            "SELECT last_used_at FROM api_tokens WHERE id = $1",
        )
        .bind(issued.info.id)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let set = |ago: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query(&format!(
                "UPDATE api_tokens SET last_used_at = now() - interval '{ago}'"
            ))
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    set("30 seconds").await;
    let before = last_used().await;
    store.authenticate(&issued.token).await.unwrap().unwrap();
    assert_eq!(
        last_used().await,
        before,
        "used 30 s ago: not written again"
    );
    set("2 minutes").await;
    let before = last_used().await;
    store.authenticate(&issued.token).await.unwrap().unwrap();
    assert!(last_used().await > before, "used 2 min ago: written");
}

/// Files one lead per email and returns their ids.
async fn leads(store: &Store, emails: &[&str]) -> Vec<i64> {
    let mut ids = Vec::new();
    for email in emails {
        let e = envelope(inquiry(Some("Cliente"), Some(email), None, None));
        ids.push(created(&store.store_batch(&[&e]).await.unwrap()[0]));
    }
    ids
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_scope_narrows_reading_and_replying_to_leads(pool: PgPool) {
    let store = Store::from_pool(pool.clone()).with_acknowledgements(AckRules {
        from: "Vendite <leads@example.com>".into(),
        by_source: HashMap::new(),
    });
    let nord = store.create_team("Nord").await.unwrap();
    let sud = store.create_team("Sud").await.unwrap();
    let agent = store
        .create_user(&new_user("Agente", "agente@example.com", Some(nord.id)))
        .await
        .unwrap();
    let mate = store
        .create_user(&new_user("Collega", "collega@example.com", Some(nord.id)))
        .await
        .unwrap();
    let boss = store
        .create_user(&new_user("Capo", "capo@example.com", Some(nord.id)))
        .await
        .unwrap();
    let other = store
        .create_user(&new_user("Altro", "altro@example.com", Some(sud.id)))
        .await
        .unwrap();
    let ids = leads(
        &store,
        &[
            "uno@example.it",
            "due@example.it",
            "tre@example.it",
            "quattro@example.it",
        ],
    )
    .await;
    for (lead, user) in [(ids[0], agent.id), (ids[1], mate.id), (ids[2], other.id)] {
        sqlx::query("UPDATE leads SET responsible_id = $2 WHERE id = $1")
            .bind(lead)
            .bind(user)
            .execute(&pool)
            .await
            .unwrap();
    }
    // ids[3] is unassigned.
    let visible = |scope: Scope| {
        let store = store.clone();
        async move {
            let mut page = store
                .list_leads(
                    &scope,
                    &LeadQuery {
                        limit: 50,
                        ..LeadQuery::default()
                    },
                )
                .await
                .unwrap()
                .items
                .iter()
                .map(|l| l.id)
                .collect::<Vec<_>>();
            page.sort();
            page
        }
    };
    let own = Scope::of(Role::Agent, Some(agent.id));
    let team = Scope::of(Role::Supervisor, Some(boss.id));
    assert_eq!(visible(Scope::All).await, ids);
    assert_eq!(visible(own).await, vec![ids[0]]);
    assert_eq!(visible(team).await, vec![ids[0], ids[1], ids[3]]);

    for (scope, lead, seen) in [
        (own, ids[0], true),
        (own, ids[1], false),
        (own, ids[3], false),
        (team, ids[1], true),
        (team, ids[2], false),
        (team, ids[3], true),
        (Scope::All, ids[2], true),
    ] {
        assert_eq!(
            store.get_lead(&scope, lead).await.unwrap().is_some(),
            seen,
            "get {lead} in {scope:?}"
        );
        assert_eq!(
            store.reply_routes(lead, &scope).await.unwrap().is_some(),
            seen,
            "routes {lead} in {scope:?}"
        );
    }

    let reply = |lead: i64| NewReply {
        lead_id: lead,
        text: "Buongiorno".into(),
        idempotency_key: None,
        target: store::ReplyTarget::Chat(ChatTarget {
            platform: ChatPlatform::Telegram,
            account: "shop".into(),
            chat_id: "1".into(),
        }),
    };
    assert!(matches!(
        store.record_reply(&reply(ids[1]), &own).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        support::count(&pool, "SELECT count(*) FROM replies").await,
        0,
        "nothing recorded out of scope"
    );
    store.record_reply(&reply(ids[0]), &own).await.unwrap();
    assert_eq!(
        support::count(&pool, "SELECT count(*) FROM replies").await,
        1
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_read_only_database_still_authenticates_without_recording_the_use(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let ana = store
        .create_user(&new_user("Ana", "ana@example.com", None))
        .await
        .unwrap();
    let issued = store.create_token(ana.id, Role::Agent, None).await.unwrap();
    // As a standby after a failover: every transaction is read-only.
    let options = (*pool.connect_options())
        .clone()
        .options([("default_transaction_read_only", "on")]);
    let read_only = Store::from_pool(
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap(),
    );
    let holder = read_only.authenticate(&issued.token).await.unwrap();
    assert_eq!(holder.map(|h| h.user_id), Some(ana.id));
    let last_used: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT last_used_at FROM api_tokens")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(last_used, None, "the write was refused, the caller was not");
    read_only.close().await;
}
