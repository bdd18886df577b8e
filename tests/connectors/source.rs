//! The feed the test connector reads: numbered items, failures on demand, and a log of
//! every request with the replica that made it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::feed::Item;

/// One request the feed answered.
#[derive(Debug, Clone)]
pub struct Request {
    /// When it arrived.
    pub at: Instant,
    /// The cursor it asked from.
    pub after: u64,
    /// The process that asked.
    pub replica: String,
    /// The last item it was given (`None`: failed or nothing new).
    pub last: Option<u64>,
    /// Whether it was answered with a failure.
    pub failed: bool,
}

#[derive(Default)]
struct Inner {
    items: Mutex<Vec<Item>>,
    failures_left: AtomicU32,
    log: Mutex<Vec<Request>>,
}

/// A running feed.
#[derive(Clone)]
pub struct Feed {
    /// Its base URL.
    pub url: String,
    inner: Arc<Inner>,
}

#[derive(Deserialize)]
struct Page {
    after: u64,
    limit: usize,
}

impl Feed {
    /// A feed on a free port that answers its first `failures` requests with 503.
    pub async fn start(failures: u32) -> Self {
        let inner = Arc::new(Inner::default());
        inner.failures_left.store(failures, Ordering::SeqCst);
        let app = axum::Router::new()
            .route("/items", axum::routing::get(items))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, inner }
    }

    /// Appends items `from..=to`.
    pub fn add(&self, from: u64, to: u64) {
        let mut items = self.inner.items.lock().expect("items");
        for seq in from..=to {
            items.push(Item {
                seq,
                email: format!("feed.person{seq}@example.com"),
                name: format!("Feed Person {seq}"),
            });
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.inner.log.lock().expect("log").clone()
    }
}

async fn items(
    State(inner): State<Arc<Inner>>,
    Query(page): Query<Page>,
    headers: HeaderMap,
) -> Response {
    let replica = headers
        .get("x-replica")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let failed = inner
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let batch: Vec<Item> = if failed {
        Vec::new()
    } else {
        let items = inner.items.lock().expect("items");
        items
            .iter()
            .filter(|item| item.seq > page.after)
            .take(page.limit)
            .cloned()
            .collect()
    };
    inner.log.lock().expect("log").push(Request {
        at: Instant::now(),
        after: page.after,
        replica,
        last: batch.last().map(|item| item.seq),
        failed,
    });
    if failed {
        return (StatusCode::SERVICE_UNAVAILABLE, "try later").into_response();
    }
    Json(batch).into_response()
}
