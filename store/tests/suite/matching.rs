//! Matching inside the consumer's transaction, against a real, freshly migrated database.

use crate::support;

use ingest::Inquiry;
use router::{BatchSink, StoreOutcome};
use sqlx::PgPool;
use store::{NewCompany, NewContact, Store};
use support::{created, envelope};

/// An inquiry of Giada Fontana's with the given contact data.
fn inquiry(email: Option<&str>, phone: Option<&str>, company: Option<&str>) -> Inquiry {
    support::inquiry(Some("Giada Fontana"), email, phone, company)
}

/// The lead as an administrator sees it.
async fn lead_detail(store: &Store, lead_id: i64) -> store::LeadDetail {
    store
        .get_lead(&store::Scope::All, lead_id)
        .await
        .unwrap()
        .expect("the lead exists")
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_second_inquiry_of_the_same_person_is_merged_into_the_open_lead(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let first = envelope(inquiry(Some("giada@example.it"), None, None));
    let lead_id = created(&store.store_batch(&[&first]).await.unwrap()[0]);

    // Same email typed differently, now with a phone and a company.
    let second = envelope(inquiry(
        Some(" Giada@Example.IT "),
        Some("347 123 4567"),
        Some("Fontana Design S.r.l."),
    ));
    let outcome = store.store_batch(&[&second]).await.unwrap();
    assert_eq!(outcome, vec![StoreOutcome::Merged { lead_id }]);

    let detail = lead_detail(&store, lead_id).await;
    assert_eq!(detail.lead.inquiry_count, 2);
    assert_eq!(
        detail.lead.phone.as_deref(),
        Some("+393471234567"),
        "empty field filled"
    );
    assert_eq!(
        detail.lead.company.as_deref(),
        Some("Fontana Design S.r.l.")
    );
    assert_eq!(detail.activities.len(), 2);
    assert_eq!(detail.events.len(), 1);
    assert_eq!(detail.events[0].kind, "merged");
    assert_eq!(detail.events[0].data["match"]["rule"], "open_lead");
    assert_eq!(
        detail.events[0].data["match"]["key"],
        "email:giada@example.it"
    );

    // The phone now finds the lead too; a non-empty field is never overwritten.
    let third = envelope(inquiry(None, Some("+39 347 123 4567"), Some("Other Name")));
    assert_eq!(
        store.store_batch(&[&third]).await.unwrap(),
        vec![StoreOutcome::Merged { lead_id }]
    );
    let detail = lead_detail(&store, lead_id).await;
    assert_eq!(detail.lead.inquiry_count, 3);
    assert_eq!(
        detail.lead.company.as_deref(),
        Some("Fontana Design S.r.l.")
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn inquiries_of_one_person_in_one_batch_make_one_lead(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let a = envelope(inquiry(Some("ugo@example.it"), None, None));
    let b = envelope(inquiry(None, Some("02 8736 1234"), None));
    let c = envelope(inquiry(Some("ugo@example.it"), Some("02 8736 1234"), None));
    let outcomes = store.store_batch(&[&a, &b, &c]).await.unwrap();
    let ugo = created(&outcomes[0]);
    let other = created(&outcomes[1]);
    assert_eq!(outcomes[2], StoreOutcome::Merged { lead_id: ugo });
    assert_ne!(ugo, other);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_key_listed_twice_in_an_envelope_is_recorded_once_on_its_new_lead(pool: PgPool) {
    // Envelopes come off the broker: a producer may have repeated a key.
    let store = Store::from_pool(pool.clone());
    let mut e = envelope(inquiry(Some("nora@example.it"), Some("02 8736 4321"), None));
    let first = e.lead.identity_keys[0].clone();
    e.lead.identity_keys.push(first.clone());
    let lead_id = created(&store.store_batch(&[&e]).await.unwrap()[0]);
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT key FROM lead_identities WHERE lead_id = $1 ORDER BY key")
            .bind(lead_id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.contains(&first.as_key()));
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_known_contact_makes_a_repeat_lead_linked_to_the_contact_and_company(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let company = store
        .create_company(&NewCompany {
            name: "Fabbri Arredamenti S.r.l.".into(),
            domain: Some("fabbri.example.it".into()),
            phones: Vec::new(),
        })
        .await
        .unwrap();
    let contact = store
        .create_contact(&NewContact {
            name: Some("Niccolò Fabbri".into()),
            emails: vec![normalizer::EmailAddress::parse("niccolo@fabbri.example.it").unwrap()],
            phones: vec![
                normalizer::parse_phone("+39 02 8736 1234", None)
                    .unwrap()
                    .number,
            ],
            company_id: Some(company.id),
            ..NewContact::default()
        })
        .await
        .unwrap();

    let e = envelope(inquiry(None, Some("02 8736 1234"), None));
    let lead_id = created(&store.store_batch(&[&e]).await.unwrap()[0]);
    let lead = lead_detail(&store, lead_id).await.lead;
    assert!(lead.is_repeat);
    assert_eq!(lead.client.contact_id, Some(contact.id));
    assert_eq!(lead.client.company_id, Some(company.id));
    assert_eq!(lead.matched["rule"], "known_contact");
    assert_eq!(lead.matched["key"], "phone:+390287361234");
    assert_eq!(lead.matched["target"], format!("contact {}", contact.id));
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_known_company_by_domain_or_by_name_makes_a_repeat_lead(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let company = store
        .create_company(&NewCompany {
            name: "Fabbri Arredamenti S.r.l.".into(),
            domain: Some("fabbri.example.it".into()),
            phones: Vec::new(),
        })
        .await
        .unwrap();
    let by_domain = envelope(inquiry(Some("anna@fabbri.example.it"), None, None));
    let by_name = envelope(inquiry(
        Some("anna.f@gmail.com"),
        None,
        Some("FABBRI ARREDAMENTI SRL"),
    ));
    let stranger = envelope(inquiry(Some("z@gmail.com"), None, Some("Altro")));
    let outcomes = store
        .store_batch(&[&by_domain, &by_name, &stranger])
        .await
        .unwrap();
    for (i, key) in [
        (0, "domain:fabbri.example.it"),
        (1, "name:fabbri arredamenti"),
    ] {
        let lead = store
            .get_lead(&store::Scope::All, created(&outcomes[i]))
            .await
            .unwrap()
            .unwrap()
            .lead;
        assert!(lead.is_repeat, "{key}");
        assert_eq!(lead.client.company_id, Some(company.id));
        assert_eq!(lead.client.contact_id, None);
        assert_eq!(lead.matched["rule"], "known_company");
        assert_eq!(lead.matched["key"], key);
    }
    let lead = store
        .get_lead(&store::Scope::All, created(&outcomes[2]))
        .await
        .unwrap()
        .unwrap()
        .lead;
    assert!(!lead.is_repeat);
    assert_eq!(lead.matched["rule"], "new");
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_person_whose_lead_was_closed_gets_a_new_lead_pointing_at_it(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let first = envelope(inquiry(Some("back@example.it"), None, None));
    let old = created(&store.store_batch(&[&first]).await.unwrap()[0]);
    sqlx::query(
        "UPDATE leads SET stage_id = (SELECT id FROM stages WHERE code = 'junk') WHERE id = $1",
    )
    .bind(old)
    .execute(&pool)
    .await
    .unwrap();
    let again = envelope(inquiry(Some("back@example.it"), None, None));
    let new = created(&store.store_batch(&[&again]).await.unwrap()[0]);
    let lead = lead_detail(&store, new).await.lead;
    assert_eq!(lead.previous_lead_id, Some(old));
    assert_eq!(lead.matched["rule"], "previous_lead");
    assert!(!lead.is_repeat);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn concurrent_consumers_filing_one_person_end_with_one_open_lead(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    // Eight transactions at once, each with an inquiry of the same person (by phone, by
    // email or by both), as eight consumers or replicas would file them.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let e = match i % 3 {
                0 => envelope(inquiry(
                    Some("race@example.it"),
                    Some("+39 02 1111 2222"),
                    None,
                )),
                1 => envelope(inquiry(Some("race@example.it"), None, None)),
                _ => envelope(inquiry(Some("race@example.it"), Some("02 1111 2222"), None)),
            };
            store.store_batch(&[&e]).await.unwrap()
        }));
    }
    let mut created_count = 0;
    let mut merged = 0;
    for task in tasks {
        match task.await.unwrap()[0] {
            StoreOutcome::LeadCreated { .. } => created_count += 1,
            StoreOutcome::Merged { .. } => merged += 1,
            ref other => panic!("{other:?}"),
        }
    }
    assert_eq!((created_count, merged), (1, 7));
    let (leads, count): (i64, i32) =
        sqlx::query_as("SELECT count(*), max(inquiry_count) FROM leads")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((leads, count), (1, 8));
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_replayed_inquiry_stays_a_no_op_after_a_merge(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let a = envelope(inquiry(Some("replay@example.it"), None, None));
    let b = envelope(inquiry(Some("replay@example.it"), None, None));
    store.store_batch(&[&a]).await.unwrap();
    store.store_batch(&[&b]).await.unwrap();
    assert_eq!(
        store.store_batch(&[&b, &a]).await.unwrap(),
        vec![StoreOutcome::Replay, StoreOutcome::Replay]
    );
    let count: i32 = sqlx::query_scalar("SELECT inquiry_count FROM leads")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 2);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_contact_key_belongs_to_one_contact(pool: PgPool) {
    let store = Store::from_pool(pool);
    let email = normalizer::EmailAddress::parse("one@example.it").unwrap();
    let contact = NewContact {
        name: Some("One".into()),
        emails: vec![email],
        ..NewContact::default()
    };
    let first = store.create_contact(&contact).await.unwrap();
    assert_eq!(first.emails, vec!["one@example.it".to_owned()]);
    match store.create_contact(&contact).await {
        Err(store::StoreError::Conflict(why)) => {
            assert!(why.contains(&format!("contact {}", first.id)), "{why}")
        }
        other => panic!("{other:?}"),
    }
}

/// One of Giada's inquiries accepted `seconds_ago`, with its own message and source.
fn accepted(seconds_ago: i64, message: &str, source: &str, company: Option<&str>) -> Inquiry {
    let mut inquiry = inquiry(Some("giada@example.it"), None, company);
    inquiry.received_at = chrono::Utc::now() - chrono::Duration::seconds(seconds_ago);
    inquiry.message = Some(message.into());
    inquiry.source = source.into();
    inquiry
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_inquiry_accepted_earlier_but_filed_later_becomes_the_leads_first(pool: PgPool) {
    // Two replicas: the first inquiry waited in a spool while the second was filed.
    let store = Store::from_pool(pool.clone());
    let first = envelope(accepted(30, "Primo: preventivo", "website-it", None));
    let second = envelope(accepted(
        10,
        "Secondo: sollecito",
        "landing-it",
        Some("Fontana Design"),
    ));
    let lead_id = created(&store.store_batch(&[&second]).await.unwrap()[0]);
    assert_eq!(
        store.store_batch(&[&first]).await.unwrap(),
        vec![StoreOutcome::Merged { lead_id }]
    );

    // The lead reads as if the inquiries had been filed in the order they were accepted.
    let detail = lead_detail(&store, lead_id).await;
    let lead = &detail.lead;
    assert_eq!(lead.inquiry_id, first.lead.inquiry.id.as_uuid());
    assert_eq!(lead.message.as_deref(), Some("Primo: preventivo"));
    assert_eq!(lead.source, "website-it");
    assert_eq!(
        lead.title, "Giada Fontana",
        "the first inquiry named no company"
    );
    assert_eq!(
        lead.company.as_deref(),
        Some("Fontana Design"),
        "filled, never lost"
    );
    assert_eq!(lead.inquiry_count, 2);
    let dispositions: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT id, disposition FROM inquiries ORDER BY received_at")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        dispositions,
        vec![
            (first.lead.inquiry.id.as_uuid(), "lead".to_owned()),
            (second.lead.inquiry.id.as_uuid(), "merged".to_owned()),
        ]
    );
    let times: Vec<_> = detail.activities.iter().map(|a| a.occurred_at).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "timeline by acceptance"
    );
    let moved = detail
        .events
        .iter()
        .find(|e| e.kind == "first_inquiry_changed")
        .expect("the change is on the lead's record");
    assert_eq!(moved.inquiry_id, Some(first.lead.inquiry.id.as_uuid()));
    assert_eq!(
        moved.data["previous"],
        second.lead.inquiry.id.as_uuid().to_string()
    );

    // Filed in order, nothing changes hands.
    let third = envelope(accepted(5, "Terzo", "website-it", None));
    store.store_batch(&[&third]).await.unwrap();
    let lead = lead_detail(&store, lead_id).await.lead;
    assert_eq!(lead.inquiry_id, first.lead.inquiry.id.as_uuid());
    assert_eq!(lead.message.as_deref(), Some("Primo: preventivo"));
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_late_first_inquiry_keeps_what_a_person_edited_on_the_lead(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let first = envelope(accepted(30, "Primo", "website-it", None));
    let second = envelope(accepted(10, "Secondo", "landing-it", None));
    let later = envelope(accepted(8, "Terzo", "landing-it", None));
    let lead_id = created(&store.store_batch(&[&second]).await.unwrap()[0]);
    let admin = store::Actor {
        role: store::Role::Admin,
        user_id: None,
    };
    let patch = store::LeadPatch {
        title: Some("Fontana: cucina su misura".into()),
        ..store::LeadPatch::default()
    };
    store.update_lead(&admin, lead_id, &patch).await.unwrap();

    // Both in one batch, the later one first: the earliest of them is the lead's first.
    store.store_batch(&[&later, &first]).await.unwrap();
    let lead = lead_detail(&store, lead_id).await.lead;
    assert_eq!(lead.inquiry_id, first.lead.inquiry.id.as_uuid());
    assert_eq!(lead.source, "website-it");
    assert_eq!(
        lead.message.as_deref(),
        Some("Primo"),
        "not edited: the first's"
    );
    assert_eq!(lead.title, "Fontana: cucina su misura", "edited: kept");
    assert_eq!(lead.inquiry_count, 3);
}
