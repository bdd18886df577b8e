//! Matching seams inside the consumer's transaction: concurrent inquiries of one known
//! contact, shared numbers, and what a merge may add to a lead.

use crate::support;

use std::time::{Duration, Instant};

use router::{BatchSink, StoreOutcome};
use sqlx::PgPool;
use store::{NewContact, Store};
use support::{count, envelope, inquiry, own_store};

fn email(raw: &str) -> normalizer::EmailAddress {
    normalizer::EmailAddress::parse(raw).unwrap()
}

fn phone(raw: &str) -> normalizer::PhoneE164 {
    normalizer::parse_phone(raw, None).unwrap().number
}

/// Waits until `n` sessions on the test database wait for a lock.
async fn until_waiting_for_locks(pool: &PgPool, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting = count(
            pool,
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .await;
        if waiting >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} of {n} sessions wait for a lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_known_contact_writing_by_email_and_by_phone_at_once_gets_one_open_lead(pool: PgPool) {
    let contact = Store::from_pool(pool.clone())
        .create_contact(&NewContact {
            name: Some("Marta Galli".into()),
            emails: vec![email("marta@galli.example.it")],
            phones: vec![phone("+39 02 8736 5511")],
            company_id: None,
            ..NewContact::default()
        })
        .await
        .unwrap();
    // Two consumers (two shards: one keyed by the email, one by the phone), each with its
    // own connections. Neither inquiry has a key of the other.
    let (by_email, by_phone) = (own_store(&pool), own_store(&pool));
    let e = envelope(inquiry(
        Some("Marta Galli"),
        Some("marta@galli.example.it"),
        None,
        None,
    ));
    let p = envelope(inquiry(
        Some("Marta Galli"),
        None,
        Some("02 8736 5511"),
        None,
    ));

    // New leads wait until both transactions have looked the contact up: the moment two
    // consumers race in production.
    let mut gate = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE leads IN SHARE MODE")
        .execute(&mut *gate)
        .await
        .unwrap();
    let first = tokio::spawn(async move { by_email.store_batch(&[&e]).await.unwrap() });
    let second = tokio::spawn(async move { by_phone.store_batch(&[&p]).await.unwrap() });
    until_waiting_for_locks(&pool, 2).await;
    gate.commit().await.unwrap();

    let mut outcomes = vec![
        first.await.unwrap()[0].clone(),
        second.await.unwrap()[0].clone(),
    ];
    outcomes.sort_by_key(|o| o.label());
    let StoreOutcome::LeadCreated { lead_id } = outcomes[0] else {
        panic!("{outcomes:?}");
    };
    assert_eq!(
        outcomes[1],
        StoreOutcome::Merged { lead_id },
        "{outcomes:?}"
    );
    let (leads, linked): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE contact_id = $1) FROM leads")
            .bind(contact.id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((leads, linked), (1, 1));
}

fn outcome(outcomes: Vec<StoreOutcome>) -> StoreOutcome {
    assert_eq!(outcomes.len(), 1);
    outcomes.into_iter().next().unwrap()
}

async fn file(
    store: &Store,
    name: Option<&str>,
    email: Option<&str>,
    phone: Option<&str>,
) -> StoreOutcome {
    let e = envelope(inquiry(name, email, phone, None));
    outcome(store.store_batch(&[&e]).await.unwrap())
}

fn lead_of(outcome: &StoreOutcome) -> i64 {
    match outcome {
        StoreOutcome::LeadCreated { lead_id } | StoreOutcome::Merged { lead_id } => *lead_id,
        other => panic!("{other:?}"),
    }
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_shared_number_does_not_merge_two_named_people_with_different_emails(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let anna = file(
        &store,
        Some("Anna Conti"),
        Some("anna@studio.example.it"),
        Some("02 8736 1234"),
    )
    .await;
    let anna = support::created(&anna);
    let bruno = file(
        &store,
        Some("Bruno Sala"),
        Some("bruno@studio.example.it"),
        Some("02 8736 1234"),
    )
    .await;
    let bruno = support::created(&bruno);
    assert_ne!(anna, bruno);
    let lead = store
        .get_lead(&store::Scope::All, bruno)
        .await
        .unwrap()
        .unwrap()
        .lead;
    assert_eq!(lead.matched["rule"], "new");
    let set_aside = lead.matched["set_aside"].to_string();
    assert!(
        set_aside.contains(&format!("lead {anna}")) && set_aside.contains("phone:+390287361234"),
        "the lead says which lead it was kept apart from, and why: {}",
        lead.matched
    );

    // Nothing tells these two apart (no email to compare): the same person.
    let again = file(&store, Some("Bruno Sala"), None, Some("02 8736 1234")).await;
    assert_eq!(
        again,
        StoreOutcome::Merged { lead_id: bruno },
        "the lead of the same name"
    );
    let unnamed = file(&store, None, None, Some("02 8736 1234")).await;
    assert_eq!(
        unnamed,
        StoreOutcome::Merged { lead_id: anna },
        "the oldest lead"
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn keys_a_merge_by_phone_brings_are_recorded_but_find_nothing(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let anna = support::created(
        &file(
            &store,
            Some("Anna Conti"),
            Some("anna@studio.example.it"),
            Some("02 8736 1234"),
        )
        .await,
    );
    // No name: not evidently someone else, so merged, by the phone.
    let merged = file(
        &store,
        None,
        Some("giulia.bruni@studio.example.it"),
        Some("02 8736 1234"),
    )
    .await;
    assert_eq!(merged, StoreOutcome::Merged { lead_id: anna });
    // The address it brought does not find Anna's lead.
    let other = file(
        &store,
        Some("Carla Riva"),
        Some("giulia.bruni@studio.example.it"),
        None,
    )
    .await;
    assert_ne!(lead_of(&other), anna, "{other:?}");

    let detail = store
        .get_lead(&store::Scope::All, anna)
        .await
        .unwrap()
        .unwrap();
    let event = &detail.events[0];
    assert_eq!(event.data["match"]["key"], "phone:+390287361234");
    assert_eq!(event.data["keys_adopted"], false);
    assert!(
        event.data["keys"]
            .to_string()
            .contains("email:giulia.bruni@studio.example.it"),
        "{}",
        event.data
    );
    let recorded: Vec<(String, bool)> = sqlx::query_as(
        "SELECT k.key, k.adopted FROM lead_event_keys k JOIN lead_events e ON e.id = k.event_id
         WHERE e.lead_id = $1 ORDER BY k.key",
    )
    .bind(anna)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        recorded,
        vec![
            ("email:giulia.bruni@studio.example.it".to_owned(), false),
            ("phone:+390287361234".to_owned(), false),
        ]
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn keys_a_merge_by_email_brings_find_the_lead_and_name_their_merge(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let anna = support::created(
        &file(
            &store,
            Some("Anna Conti"),
            Some("anna@studio.example.it"),
            None,
        )
        .await,
    );
    let merged = file(
        &store,
        Some("Anna Conti"),
        Some("anna@studio.example.it"),
        Some("347 555 0101"),
    )
    .await;
    assert_eq!(merged, StoreOutcome::Merged { lead_id: anna });
    let by_phone = file(&store, None, None, Some("347 555 0101")).await;
    assert_eq!(by_phone, StoreOutcome::Merged { lead_id: anna });

    let (adopted, by_event): (bool, Option<i64>) = sqlx::query_as(
        "SELECT k.adopted, li.added_by_event
         FROM lead_event_keys k JOIN lead_identities li ON li.key = k.key AND li.lead_id = $1
         WHERE k.key = 'phone:+393475550101'",
    )
    .bind(anna)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(adopted);
    let first_merge: i64 = sqlx::query_scalar("SELECT min(id) FROM lead_events WHERE lead_id = $1")
        .bind(anna)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(by_event, Some(first_merge));
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn two_extensions_behind_one_switchboard_are_two_people(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let twelve = file(&store, None, None, Some("02 8736 1234 int. 12")).await;
    let thirty_four = file(&store, None, None, Some("02 8736 1234 int. 34")).await;
    let (twelve, thirty_four) = (support::created(&twelve), support::created(&thirty_four));
    assert_ne!(twelve, thirty_four);

    // Each lead shows the number itself among its keys, and is found by it: the number
    // is theirs, the extension only tells the desks apart.
    let lead = store
        .get_lead(&store::Scope::All, twelve)
        .await
        .unwrap()
        .unwrap()
        .lead;
    assert_eq!(
        lead.keys,
        ["phone:+390287361234", "phone:+390287361234;ext=12"]
    );
    let found = |key: &'static str| {
        let store = store.clone();
        async move {
            let query = store::LeadQuery {
                key: Some(key.into()),
                limit: 10,
                ..store::LeadQuery::default()
            };
            let page = store.list_leads(&store::Scope::All, &query).await.unwrap();
            let mut ids: Vec<i64> = page.items.iter().map(|l| l.id).collect();
            ids.sort_unstable();
            ids
        }
    };
    assert_eq!(found("phone:+390287361234").await, [twelve, thirty_four]);
    assert_eq!(found("phone:+390287361234;ext=12").await, [twelve]);
    assert_eq!(found("phone:+390287361").await, [0_i64; 0]);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_company_holding_the_number_is_linked_but_another_person_at_it_is_not_its_contact(
    pool: PgPool,
) {
    let store = Store::from_pool(pool.clone());
    let company = store
        .create_company(&store::NewCompany {
            name: "Studio Conti".into(),
            domain: None,
            phones: vec![phone("+39 02 8736 1234")],
        })
        .await
        .unwrap();
    let anna = store
        .create_contact(&NewContact {
            name: Some("Anna Conti".into()),
            emails: vec![email("anna@conti.example.it")],
            phones: vec![phone("+39 02 8736 9999")],
            company_id: Some(company.id),
            ..NewContact::default()
        })
        .await
        .unwrap();

    // By the switchboard, from desk 12: the company is a client.
    let desk = support::created(
        &file(
            &store,
            Some("Dario Neri"),
            None,
            Some("02 8736 1234 int. 12"),
        )
        .await,
    );
    let lead = store
        .get_lead(&store::Scope::All, desk)
        .await
        .unwrap()
        .unwrap()
        .lead;
    assert!(lead.is_repeat);
    assert_eq!(
        (lead.client.company_id, lead.client.contact_id),
        (Some(company.id), None)
    );
    assert_eq!(lead.matched["rule"], "known_company");
    assert_eq!(lead.matched["key"], "phone:+390287361234");

    // Anna's direct line, but someone else with their own email: Anna's company, not Anna.
    let other = support::created(
        &file(
            &store,
            Some("Elena Fabbri"),
            Some("elena@fabbri.example.it"),
            Some("02 8736 9999"),
        )
        .await,
    );
    let lead = store
        .get_lead(&store::Scope::All, other)
        .await
        .unwrap()
        .unwrap()
        .lead;
    assert_eq!(
        (lead.client.company_id, lead.client.contact_id),
        (Some(company.id), None)
    );
    assert_eq!(lead.matched["rule"], "known_company");
    assert!(
        lead.matched["set_aside"]
            .to_string()
            .contains(&format!("contact {}", anna.id)),
        "{}",
        lead.matched
    );

    // Anna herself, by the same line: her contact.
    let hers =
        support::created(&file(&store, Some("Anna Conti"), None, Some("02 8736 9999")).await);
    let lead = store
        .get_lead(&store::Scope::All, hers)
        .await
        .unwrap()
        .unwrap()
        .lead;
    assert_eq!(lead.client.contact_id, Some(anna.id));
}
