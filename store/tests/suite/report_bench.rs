//! The reports on a big generated database (see `scripts/report-bench.sh`, which fills
//! one and runs this): each report's wall time through the store, and its plan with
//! `EXPLAIN ANALYZE`. Ignored unless asked for; needs `REPORT_BENCH_DATABASE_URL`.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use store::{FunnelBy, LeadQuery, ReportPeriod, Scope, Store, ViewQuery};

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

async fn time<F, Fut, T>(runs: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut times = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        f().await;
        times.push(start.elapsed());
    }
    median(times)
}

#[tokio::test]
#[ignore = "needs the database scripts/report-bench.sh generates"]
async fn reports_on_a_million_leads() {
    let url = std::env::var("REPORT_BENCH_DATABASE_URL")
        .expect("REPORT_BENCH_DATABASE_URL names the generated database");
    let store = Store::from_pool(PgPool::connect(&url).await.unwrap());
    let leads: i64 = sqlx::query_scalar("SELECT count(*) FROM leads")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let newest: DateTime<Utc> = sqlx::query_scalar("SELECT max(created_at) FROM leads")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let pid = store.pipeline_id("default").await.unwrap().unwrap();
    let supervisor: i64 = sqlx::query_scalar("SELECT min(id) FROM users")
        .fetch_one(store.pool())
        .await
        .unwrap();
    println!("{leads} leads");
    for (label, days) in [("30 days", 30), ("90 days", 90), ("365 days", 365)] {
        let period = ReportPeriod {
            from: newest - chrono::Duration::days(days),
            to: newest + chrono::Duration::seconds(1),
        };
        for (who, scope) in [
            ("admin", Scope::All),
            (
                "supervisor",
                Scope::Team {
                    user_id: supervisor,
                },
            ),
        ] {
            let funnel = time(3, || {
                store.funnel_report(&scope, "default", pid, FunnelBy::Source, &period)
            })
            .await;
            let responsible = time(3, || store.responsible_report(&scope, &period)).await;
            let stages = time(3, || {
                store.stage_times_report(&scope, "default", pid, &period)
            })
            .await;
            println!(
                "{label:>8} {who:<10} funnel {:>6} ms  responsible {:>6} ms  stage-times {:>6} ms",
                funnel.as_millis(),
                responsible.as_millis(),
                stages.as_millis()
            );
        }
        if days == 365 {
            for (name, plan) in store
                .explain_reports(&Scope::All, pid, &period)
                .await
                .unwrap()
            {
                println!("--- EXPLAIN ANALYZE {name}, {label}, admin");
                for line in plan {
                    println!("{line}");
                }
            }
        }
    }
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM leads l JOIN stages s ON s.id = l.stage_id
         WHERE s.semantic IN ('open', 'frozen')",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    println!("activity view over {open} open leads:");
    for (who, scope) in [
        ("admin", Scope::All),
        (
            "supervisor",
            Scope::Team {
                user_id: supervisor,
            },
        ),
        (
            "agent",
            Scope::Own {
                user_id: supervisor,
            },
        ),
    ] {
        let query = ViewQuery {
            time_zone: "Europe/Warsaw".into(),
            limit: 20,
            ..ViewQuery::default()
        };
        let took = time(3, || store.activity_view(&scope, &query)).await;
        println!("{who:>10} {:>6} ms", took.as_millis());
    }
    let all = LeadQuery {
        limit: 50,
        ..LeadQuery::default()
    };
    assert_eq!(store.count_leads(&Scope::All, &all).await.unwrap(), leads);
    let took = time(3, || store.count_leads(&Scope::All, &all)).await;
    println!("unfiltered lead list total {:>6} ms", took.as_millis());
}
