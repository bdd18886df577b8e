//! Planned work on leads (add, list, reschedule, complete), who may assign it to whom,
//! channel history kept immutable, the activity view's day boundaries in the caller's
//! time zone, and the reports on a generated stage history.

use chrono::{DateTime, Duration, TimeZone, Utc};
use sqlx::PgPool;
use store::{
    ActivityChange, ActivityError, ActivityFilter, Actor, AssignedFilter, FunnelBy, NewActivity,
    ReportPeriod, Role, Scope, Store, ViewQuery,
};

const ADMIN: Actor = Actor {
    role: Role::Admin,
    user_id: None,
};

async fn team(pool: &PgPool, name: &str) -> i64 {
    sqlx::query_scalar("INSERT INTO teams (name) VALUES ($1) RETURNING id")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn user(pool: &PgPool, name: &str, team: Option<i64>, zone: &str, active: bool) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO users (name, email, team_id, time_zone, active)
         VALUES ($1, lower($1) || '@example.com', $2, $3, $4) RETURNING id",
    )
    .bind(name)
    .bind(team)
    .bind(zone)
    .bind(active)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A lead in the default pipeline whose stage history is `history` (stage code, hours
/// after `created`); it stands in the last stage.
async fn lead(
    pool: &PgPool,
    source: &str,
    channel: &str,
    created: DateTime<Utc>,
    responsible: Option<i64>,
    history: &[(&str, i64)],
    junk_reason: Option<&str>,
) -> i64 {
    let (last, last_at) = history.last().copied().unwrap_or(("open", 0));
    let id: i64 = sqlx::query_scalar(
        "WITH i AS (
            INSERT INTO inquiries (id, channel, source, received_at, disposition, payload, raw_body)
            VALUES (gen_random_uuid(), $2, $1, $3, 'lead', '{}', '') RETURNING id)
         INSERT INTO leads (inquiry_id, title, name, channel, source, pipeline_id, stage_id,
                            stage_entered_at, created_at, responsible_id, junk_reason)
         SELECT i.id, 'Lead from ' || $1, 'Person', $2, $1, p.id, s.id,
                $3 + make_interval(hours => $5), $3, $6, $7
         FROM i, pipelines p JOIN stages s ON s.pipeline_id = p.id AND s.code = $4
         WHERE p.code = 'default'
         RETURNING id",
    )
    .bind(source)
    .bind(channel)
    .bind(created)
    .bind(last)
    .bind(last_at as i32)
    .bind(responsible)
    .bind(junk_reason)
    .fetch_one(pool)
    .await
    .unwrap();
    let mut from: Option<&str> = None;
    for (stage, hours) in history {
        sqlx::query(
            "INSERT INTO lead_stage_history (lead_id, from_stage_id, to_stage_id, changed_at, changed_by)
             SELECT $1, f.id, t.id, $4 + make_interval(hours => $5), 'test'
             FROM stages t LEFT JOIN stages f ON f.code = $2 AND f.pipeline_id = t.pipeline_id
             WHERE t.code = $3 AND t.pipeline_id = (SELECT id FROM pipelines WHERE code = 'default')",
        )
        .bind(id)
        .bind(from)
        .bind(stage)
        .bind(created)
        .bind(*hours as i32)
        .execute(pool)
        .await
        .unwrap();
        from = Some(stage);
    }
    id
}

fn call(due: DateTime<Utc>) -> NewActivity {
    NewActivity {
        kind: "call".into(),
        subject: "Call back about the quote".into(),
        body: None,
        due_at: due,
        assignee_id: None,
        duration_minutes: None,
    }
}

async fn updated_at(pool: &PgPool, lead: i64) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT updated_at FROM leads WHERE id = $1")
        .bind(lead)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn planned_work_is_added_rescheduled_and_completed_once(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let ana = user(&pool, "Ana", None, "UTC", true).await;
    let l = lead(
        &pool,
        "web",
        "form",
        Utc::now() - Duration::days(1),
        Some(ana),
        &[("open", 0)],
        None,
    )
    .await;
    let before = updated_at(&pool, l).await;
    let due = Utc::now() + Duration::hours(3);
    let agent = Actor {
        role: Role::Agent,
        user_id: Some(ana),
    };
    let added = store.add_activity(&agent, l, &call(due)).await.unwrap();
    assert!(added.planned && !added.done);
    assert_eq!(added.assignee_id, Some(ana), "defaults to the caller");
    assert_eq!(
        added.due_at.map(|d| d.timestamp_micros()),
        Some(due.timestamp_micros())
    );
    assert!(
        updated_at(&pool, l).await > before,
        "adding touches the lead"
    );

    // The admin (no user) defaults to the lead's responsible.
    let mut meeting = call(due + Duration::days(1));
    meeting.kind = "meeting".into();
    meeting.duration_minutes = Some(45);
    let by_admin = store.add_activity(&ADMIN, l, &meeting).await.unwrap();
    assert_eq!(by_admin.assignee_id, Some(ana));
    assert_eq!(by_admin.duration_minutes, Some(45));
    assert_eq!(by_admin.created_by.as_deref(), Some("admin"));

    let later = due + Duration::hours(20);
    let moved = store
        .update_activity(
            &agent,
            added.id,
            &ActivityChange {
                due_at: Some(later),
                body: Some(Some("ask for the budget".into())),
                ..ActivityChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        moved.due_at.map(|d| d.timestamp_micros()),
        Some(later.timestamp_micros())
    );
    assert_eq!(moved.body.as_deref(), Some("ask for the budget"));
    assert_eq!(moved.subject, added.subject);

    let touched = updated_at(&pool, l).await;
    let done = store
        .complete_activity(&agent, added.id, Some("They will sign on Monday"))
        .await
        .unwrap();
    assert!(done.done && done.completed_at.is_some());
    assert_eq!(done.result.as_deref(), Some("They will sign on Monday"));
    assert!(
        updated_at(&pool, l).await > touched,
        "completing touches the lead"
    );
    let again = store
        .complete_activity(&agent, added.id, Some("other"))
        .await
        .unwrap();
    assert_eq!(again.completed_at, done.completed_at);
    assert_eq!(again.result.as_deref(), Some("They will sign on Monday"));
    assert!(matches!(
        store
            .update_activity(
                &agent,
                added.id,
                &ActivityChange {
                    subject: Some("x".into()),
                    ..Default::default()
                }
            )
            .await,
        Err(ActivityError::Completed(_))
    ));

    let open = store
        .list_lead_activities(
            &agent.scope(),
            l,
            &ActivityFilter {
                planned: Some(true),
                done: Some(false),
                limit: 50,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        open.items.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![by_admin.id]
    );
    let page = store
        .list_lead_activities(
            &agent.scope(),
            l,
            &ActivityFilter {
                limit: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items[0].id, by_admin.id, "newest first");
    let next = store
        .list_lead_activities(
            &agent.scope(),
            l,
            &ActivityFilter {
                limit: 1,
                cursor: page.next_cursor.unwrap().parse().ok(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(next.items[0].id, added.id);
    assert!(next.next_cursor.is_none());

    let mine = store
        .list_assigned_activities(
            &agent.scope(),
            &AssignedFilter {
                assignee_id: ana,
                done: Some(false),
                limit: 50,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        mine.items.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![by_admin.id]
    );
    let before_due = store
        .list_assigned_activities(
            &agent.scope(),
            &AssignedFilter {
                assignee_id: ana,
                due_before: Some(due),
                limit: 50,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(before_due.items.is_empty());
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn channel_history_is_never_changed(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let l = lead(
        &pool,
        "web",
        "email",
        Utc::now(),
        None,
        &[("open", 0)],
        None,
    )
    .await;
    let history: i64 = sqlx::query_scalar(
        "INSERT INTO activities (lead_id, kind, channel, subject, occurred_at)
         VALUES ($1, 'email', 'email', 'Quote request', now()) RETURNING id",
    )
    .bind(l)
    .fetch_one(&pool)
    .await
    .unwrap();
    let change = ActivityChange {
        subject: Some("rewritten".into()),
        ..Default::default()
    };
    assert!(matches!(
        store.update_activity(&ADMIN, history, &change).await,
        Err(ActivityError::HistoryRow(id)) if id == history
    ));
    assert!(matches!(
        store.complete_activity(&ADMIN, history, None).await,
        Err(ActivityError::HistoryRow(_))
    ));
    let subject: String = sqlx::query_scalar("SELECT subject FROM activities WHERE id = $1")
        .bind(history)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(subject, "Quote request");
    let listed = store
        .list_lead_activities(
            &Scope::All,
            l,
            &ActivityFilter {
                planned: Some(false),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(!listed.items[0].planned && listed.items[0].done);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn assignment_follows_the_role_and_the_lead_scope(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let north = team(&pool, "North").await;
    let south = team(&pool, "South").await;
    let sup = user(&pool, "Sara", Some(north), "UTC", true).await;
    let ana = user(&pool, "Ana", Some(north), "UTC", true).await;
    let bob = user(&pool, "Bob", Some(north), "UTC", true).await;
    let gone = user(&pool, "Gino", Some(north), "UTC", false).await;
    let zoe = user(&pool, "Zoe", Some(south), "UTC", true).await;
    let anas = lead(
        &pool,
        "web",
        "form",
        Utc::now(),
        Some(ana),
        &[("open", 0)],
        None,
    )
    .await;
    let zoes = lead(
        &pool,
        "web",
        "form",
        Utc::now(),
        Some(zoe),
        &[("open", 0)],
        None,
    )
    .await;
    let due = Utc::now() + Duration::hours(1);
    let to = |id: i64| NewActivity {
        assignee_id: Some(id),
        ..call(due)
    };
    let agent = Actor {
        role: Role::Agent,
        user_id: Some(ana),
    };
    let supervisor = Actor {
        role: Role::Supervisor,
        user_id: Some(sup),
    };

    assert!(store.add_activity(&agent, anas, &to(ana)).await.is_ok());
    assert!(
        matches!(store.add_activity(&agent, anas, &to(bob)).await, Err(ActivityError::AssignmentForbidden(m)) if m.contains("assignee_id"))
    );
    // Another agent's lead is out of scope: it looks missing.
    assert!(matches!(
        store.add_activity(&agent, zoes, &to(ana)).await,
        Err(ActivityError::NotFound(_))
    ));

    assert!(
        store
            .add_activity(&supervisor, anas, &to(bob))
            .await
            .is_ok()
    );
    assert!(matches!(
        store.add_activity(&supervisor, anas, &to(zoe)).await,
        Err(ActivityError::AssignmentForbidden(_))
    ));
    assert!(
        matches!(store.add_activity(&supervisor, anas, &to(gone)).await, Err(ActivityError::BadAssignee(m)) if m.contains("deactivated"))
    );
    assert!(matches!(
        store.add_activity(&supervisor, zoes, &to(bob)).await,
        Err(ActivityError::NotFound(_))
    ));

    assert!(store.add_activity(&ADMIN, zoes, &to(ana)).await.is_ok());
    assert!(
        matches!(store.add_activity(&ADMIN, zoes, &to(999_999)).await, Err(ActivityError::BadAssignee(m)) if m.contains("999999"))
    );

    // Reassigning follows the same rules; an activity on a lead out of scope is missing.
    let planned = store.add_activity(&ADMIN, anas, &to(ana)).await.unwrap();
    let reassign = |id| ActivityChange {
        assignee_id: Some(id),
        ..Default::default()
    };
    assert!(matches!(
        store
            .update_activity(&agent, planned.id, &reassign(bob))
            .await,
        Err(ActivityError::AssignmentForbidden(_))
    ));
    assert_eq!(
        store
            .update_activity(&supervisor, planned.id, &reassign(bob))
            .await
            .unwrap()
            .assignee_id,
        Some(bob)
    );
    let on_zoes = store.add_activity(&ADMIN, zoes, &to(zoe)).await.unwrap();
    assert!(matches!(
        store.complete_activity(&agent, on_zoes.id, None).await,
        Err(ActivityError::NotFound(_))
    ));
    assert!(matches!(
        store
            .list_lead_activities(
                &agent.scope(),
                zoes,
                &ActivityFilter {
                    limit: 5,
                    ..Default::default()
                }
            )
            .await,
        Err(ActivityError::NotFound(_))
    ));
}

/// The instant `minutes` after the next local midnight of `zone`.
async fn after_next_midnight(pool: &PgPool, zone: &str, minutes: i32) -> DateTime<Utc> {
    sqlx::query_scalar(
        "SELECT (date_trunc('day', now() AT TIME ZONE $1) + interval '1 day'
                 + make_interval(mins => $2)) AT TIME ZONE $1",
    )
    .bind(zone)
    .bind(minutes)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_activity_view_draws_day_boundaries_in_the_callers_time_zone(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let saigon = "Asia/Ho_Chi_Minh";
    let warsaw = "Europe/Warsaw";
    let same_date: bool = sqlx::query_scalar(
        "SELECT (now() AT TIME ZONE 'Asia/Ho_Chi_Minh')::date = (now() AT TIME ZONE 'Europe/Warsaw')::date",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    // Ho Chi Minh City is ahead of Warsaw. While both share a date, just after Saigon's
    // next midnight is still today in Warsaw; once Saigon has moved on, just after
    // Warsaw's next midnight is still today in Saigon.
    let (due, today_in, not_today_in) = if same_date {
        (after_next_midnight(&pool, saigon, 30).await, warsaw, saigon)
    } else {
        (after_next_midnight(&pool, warsaw, 30).await, saigon, warsaw)
    };
    let now = Utc::now();
    let with_work = lead(&pool, "web", "form", now, None, &[("open", 0)], None).await;
    let overdue = lead(&pool, "web", "form", now, None, &[("open", 0)], None).await;
    let later = lead(&pool, "web", "form", now, None, &[("open", 0)], None).await;
    let idle = lead(&pool, "web", "form", now, None, &[("open", 0)], None).await;
    let closed = lead(
        &pool,
        "web",
        "form",
        now,
        None,
        &[("open", 0), ("qualified", 0)],
        None,
    )
    .await;
    store
        .add_activity(&ADMIN, with_work, &call(due))
        .await
        .unwrap();
    // A later one on the same lead does not count: the earliest open one does.
    store
        .add_activity(&ADMIN, with_work, &call(due + Duration::days(30)))
        .await
        .unwrap();
    store
        .add_activity(&ADMIN, overdue, &call(now - Duration::minutes(5)))
        .await
        .unwrap();
    store
        .add_activity(&ADMIN, later, &call(now + Duration::days(20)))
        .await
        .unwrap();
    store
        .add_activity(&ADMIN, closed, &call(now + Duration::hours(1)))
        .await
        .unwrap();
    let done = store
        .add_activity(&ADMIN, idle, &call(now + Duration::hours(1)))
        .await
        .unwrap();
    store
        .complete_activity(&ADMIN, done.id, None)
        .await
        .unwrap();

    let view = |zone: &str| {
        let store = store.clone();
        let zone = zone.to_owned();
        async move {
            store
                .activity_view(
                    &Scope::All,
                    &ViewQuery {
                        time_zone: zone,
                        limit: 10,
                        ..Default::default()
                    },
                )
                .await
                .unwrap()
        }
    };
    let members = |v: &store::ActivityView, g: &str| -> Vec<i64> {
        let group = v.groups.iter().find(|x| x.group == g).unwrap();
        assert_eq!(group.count as usize, group.items.len());
        group.items.iter().map(|l| l.id).collect()
    };
    let here = view(today_in).await;
    assert_eq!(members(&here, "today"), vec![with_work], "{today_in}");
    assert_eq!(members(&here, "overdue"), vec![overdue]);
    assert_eq!(members(&here, "later"), vec![later]);
    assert_eq!(
        members(&here, "none"),
        vec![idle],
        "closed leads are not shown"
    );
    let there = view(not_today_in).await;
    assert!(members(&there, "today").is_empty(), "{not_today_in}");
    let expected = if due < there.next_week_starts_at {
        "this_week"
    } else {
        "next_week"
    };
    assert_eq!(members(&there, expected), vec![with_work], "{not_today_in}");
    assert_eq!(
        there
            .groups
            .iter()
            .find(|g| g.group == expected)
            .unwrap()
            .items[0]
            .next_activity
            .as_ref()
            .unwrap()
            .due_at
            .timestamp_micros(),
        due.timestamp_micros()
    );
    // Weeks start on Monday.
    let local_monday: bool = sqlx::query_scalar(
        "SELECT extract(isodow FROM $1 AT TIME ZONE 'Europe/Warsaw') = 1
            AND ($1 AT TIME ZONE 'Europe/Warsaw')::time = '00:00'",
    )
    .bind(view(warsaw).await.next_week_starts_at)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(local_monday);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_activity_view_pages_through_one_group(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let now = Utc::now();
    let mut leads = Vec::new();
    for i in 0..5 {
        let l = lead(&pool, "web", "form", now, None, &[("open", 0)], None).await;
        store
            .add_activity(&ADMIN, l, &call(now - Duration::hours(10 - i)))
            .await
            .unwrap();
        leads.push(l);
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let v = store
            .activity_view(
                &Scope::All,
                &ViewQuery {
                    time_zone: "UTC".into(),
                    group: Some("overdue".into()),
                    cursor,
                    limit: 2,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(v.groups.len(), 1);
        assert_eq!(v.groups[0].count, 5);
        seen.extend(v.groups[0].items.iter().map(|l| l.id));
        match &v.groups[0].next_cursor {
            Some(c) => cursor = store::DueCursor::parse(c),
            None => break,
        }
    }
    assert_eq!(seen, leads, "soonest due first, each once");
}

/// Six leads from two sources with known histories, created on 2026-06-01.
async fn generated_history(pool: &PgPool) -> (DateTime<Utc>, i64, i64) {
    let t = Utc.with_ymd_and_hms(2026, 6, 1, 8, 0, 0).unwrap();
    let north = team(pool, "North").await;
    let ana = user(pool, "Ana", Some(north), "UTC", true).await;
    let zoe = user(pool, "Zoe", None, "UTC", true).await;
    // web: converted, junk (spam), junk (no reason), still attempting contact.
    lead(
        pool,
        "web",
        "form",
        t,
        Some(ana),
        &[
            ("open", 0),
            ("attempting_contact", 1),
            ("working", 3),
            ("qualified", 6),
        ],
        None,
    )
    .await;
    lead(
        pool,
        "web",
        "form",
        t,
        Some(ana),
        &[("open", 0), ("junk", 3)],
        Some("spam"),
    )
    .await;
    lead(
        pool,
        "web",
        "email",
        t,
        Some(zoe),
        &[("open", 0), ("attempting_contact", 5), ("junk", 9)],
        None,
    )
    .await;
    lead(
        pool,
        "web",
        "email",
        t,
        None,
        &[("open", 0), ("attempting_contact", 7)],
        None,
    )
    .await;
    // fair: reopened after junk (counts once per stage), and one converted.
    lead(
        pool,
        "fair",
        "import",
        t,
        Some(zoe),
        &[("open", 0), ("junk", 2), ("working", 4), ("qualified", 5)],
        Some("wrong number"),
    )
    .await;
    lead(
        pool,
        "fair",
        "import",
        t,
        Some(ana),
        &[("open", 0), ("working", 1), ("qualified", 2)],
        None,
    )
    .await;
    // Outside the period: never counted.
    lead(
        pool,
        "web",
        "form",
        t - Duration::days(40),
        Some(ana),
        &[("open", 0), ("junk", 1)],
        Some("spam"),
    )
    .await;
    (t, ana, zoe)
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_funnel_counts_each_lead_once_per_stage_reached(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let (t, ana, _) = generated_history(&pool).await;
    let period = ReportPeriod {
        from: t - Duration::days(1),
        to: t + Duration::days(1),
    };
    let pid = store.pipeline_id("default").await.unwrap().unwrap();
    let report = store
        .funnel_report(&Scope::All, "default", pid, FunnelBy::Source, &period)
        .await
        .unwrap();
    assert_eq!(report.stages.len(), 7);
    assert_eq!(report.stages[0].code, "not_engaged", "pipeline order");
    let web = &report.groups[0];
    assert_eq!(web.key, "web");
    assert_eq!(web.leads, 4);
    assert_eq!(web.reached["open"], 4);
    assert_eq!(web.reached["attempting_contact"], 3);
    assert_eq!(web.reached["working"], 1);
    assert_eq!(web.reached["qualified"], 1);
    assert_eq!(web.reached["junk"], 2);
    assert_eq!(web.reached["ignored"], 0);
    assert_eq!((web.converted, web.converted_pct), (1, 25.0));
    assert_eq!((web.junk, web.junk_pct), (2, 50.0));
    assert_eq!(web.junk_reasons.get("spam"), Some(&1));
    assert_eq!(web.junk_reasons.get("unspecified"), Some(&1));
    let fair = &report.groups[1];
    assert_eq!((fair.key.as_str(), fair.leads), ("fair", 2));
    assert_eq!(fair.reached["qualified"], 2);
    assert_eq!(fair.reached["junk"], 1);
    assert_eq!(
        (fair.converted, fair.converted_pct, fair.junk, fair.junk_pct),
        (2, 100.0, 1, 50.0)
    );
    assert_eq!(fair.junk_reasons.get("wrong number"), Some(&1));

    let by_channel = store
        .funnel_report(&Scope::All, "default", pid, FunnelBy::Channel, &period)
        .await
        .unwrap();
    let counts: Vec<(String, i64, i64)> = by_channel
        .groups
        .iter()
        .map(|g| (g.key.clone(), g.leads, g.junk))
        .collect();
    assert_eq!(
        counts,
        vec![
            ("email".into(), 2, 1),
            ("form".into(), 2, 1),
            ("import".into(), 2, 1)
        ]
    );

    // An agent-scoped view counts only that agent's leads.
    let own = store
        .funnel_report(
            &Scope::Own { user_id: ana },
            "default",
            pid,
            FunnelBy::Source,
            &period,
        )
        .await
        .unwrap();
    let leads: Vec<(String, i64)> = own
        .groups
        .iter()
        .map(|g| (g.key.clone(), g.leads))
        .collect();
    assert_eq!(leads, vec![("web".into(), 2), ("fair".into(), 1)]);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn leads_per_responsible_are_split_by_where_they_stand(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let (t, ana, zoe) = generated_history(&pool).await;
    let period = ReportPeriod {
        from: t - Duration::days(1),
        to: t + Duration::days(1),
    };
    let report = store
        .responsible_report(&Scope::All, &period)
        .await
        .unwrap();
    let rows: Vec<_> = report
        .rows
        .iter()
        .map(|r| {
            (
                r.responsible_id,
                r.name.clone(),
                r.total,
                r.open,
                r.converted,
                r.junk,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (Some(ana), Some("Ana".into()), 3, 0, 2, 1),
            (Some(zoe), Some("Zoe".into()), 2, 0, 1, 1),
            (None, None, 1, 1, 0, 0),
        ]
    );
    // A supervisor of Ana's team sees Ana's and the unassigned leads, not Zoe's.
    let sup = user(
        &pool,
        "Sara",
        sqlx::query_scalar("SELECT team_id FROM users WHERE id = $1")
            .bind(ana)
            .fetch_one(&pool)
            .await
            .unwrap(),
        "UTC",
        true,
    )
    .await;
    let team = store
        .responsible_report(&Scope::Team { user_id: sup }, &period)
        .await
        .unwrap();
    assert_eq!(
        team.rows
            .iter()
            .map(|r| r.responsible_id)
            .collect::<Vec<_>>(),
        vec![Some(ana), None]
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn stage_times_are_medians_of_consecutive_history_rows(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let (t, _, _) = generated_history(&pool).await;
    let period = ReportPeriod {
        from: t - Duration::days(1),
        to: t + Duration::days(1),
    };
    let pid = store.pipeline_id("default").await.unwrap().unwrap();
    let report = store
        .stage_times_report(&Scope::All, "default", pid, &period)
        .await
        .unwrap();
    let stage = |code: &str| {
        report
            .stages
            .iter()
            .find(|s| s.code == code)
            .unwrap_or_else(|| panic!("{code}"))
    };
    const H: f64 = 3600.0;
    // open: stays of 1, 3, 5, 7, 2, 1 hours -> sorted 1 1 2 3 5 7.
    let open = stage("open");
    assert_eq!((open.stays, open.ongoing), (6, 0));
    assert_eq!(open.median_secs, Some(2.5 * H));
    // p90: position 0.9 * 5 = 4.5 between 5 h and 7 h.
    assert_eq!(open.p90_secs, Some(6.0 * H));
    // working: 3 (lead 1), 1 (lead 5), 1 (lead 6).
    let working = stage("working");
    assert_eq!((working.stays, working.median_secs), (3, Some(1.0 * H)));
    // junk left once (reopened after 2 h); the final junk stays are not stays.
    let junk = stage("junk");
    assert_eq!((junk.stays, junk.median_secs), (1, Some(2.0 * H)));
    assert!(report.stages.iter().all(|s| s.code != "qualified"));
    // attempting contact: 2 h, 4 h, and one still going on since t + 7 h.
    let attempting = stage("attempting_contact");
    assert_eq!((attempting.stays, attempting.ongoing), (3, 1));
    let ongoing = (report.measured_at - (t + Duration::hours(7)))
        .num_microseconds()
        .unwrap() as f64
        / 1e6;
    assert_eq!(attempting.median_secs, Some(4.0 * H));
    let p90 = attempting.p90_secs.unwrap();
    // position 0.9 * 2 = 1.8 between 4 h and the ongoing stay.
    let expected = 4.0 * H + 0.8 * (ongoing - 4.0 * H);
    assert!((p90 - expected).abs() < 0.01, "{p90} vs {expected}");
    assert_eq!(
        report
            .stages
            .iter()
            .map(|s| s.code.as_str())
            .collect::<Vec<_>>(),
        vec!["open", "attempting_contact", "working", "junk"],
        "pipeline order"
    );
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn my_tasks_page_soonest_due_first(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let ana = user(&pool, "Ana", None, "UTC", true).await;
    let l = lead(
        &pool,
        "web",
        "form",
        Utc::now(),
        Some(ana),
        &[("open", 0)],
        None,
    )
    .await;
    let now = Utc::now();
    let mut expected = Vec::new();
    // Two share a due time: the id breaks the tie.
    for hours in [5, 1, 3, 3, 2] {
        let a = store
            .add_activity(&ADMIN, l, &call(now + Duration::hours(hours)))
            .await
            .unwrap();
        expected.push((hours, a.id));
    }
    expected.sort();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_assigned_activities(
                &Scope::Own { user_id: ana },
                &AssignedFilter {
                    assignee_id: ana,
                    cursor,
                    limit: 2,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|a| a.id));
        match page.next_cursor {
            Some(c) => cursor = store::DueCursor::parse(&c),
            None => break,
        }
    }
    assert_eq!(seen, expected.iter().map(|(_, id)| *id).collect::<Vec<_>>());
    assert!(store::DueCursor::parse("soon.3").is_none());
    assert!(store::DueCursor::parse("12").is_none());
}
