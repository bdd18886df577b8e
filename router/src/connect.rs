//! Connecting to one of several brokers (the nodes of a RabbitMQ cluster).
//!
//! Every part of leadpipe that holds a broker connection (the publisher, each shard's
//! consumer, the dead-letter commands) keeps a [`Brokers`] and connects through it. A
//! connection is only replaced after it was lost, and then the node it was on is the
//! likeliest to be down, so the next attempt starts with the node after it; a node that
//! refuses is skipped the same way. One pass tries every node once; when all refuse, the
//! caller waits out its backoff and tries again. Quorum queues live on every node, so it
//! does not matter which node a connection lands on.

use std::sync::atomic::{AtomicUsize, Ordering};

use lapin::{Connection, ConnectionProperties};

/// The configured broker URLs and where the next connection attempt starts.
#[derive(Debug)]
pub struct Brokers {
    urls: Vec<String>,
    /// Index of the node the next pass tries first.
    next: AtomicUsize,
}

impl Brokers {
    /// Brokers tried in the order given, starting with the first.
    pub fn new(urls: Vec<String>) -> Self {
        Self {
            urls,
            next: AtomicUsize::new(0),
        }
    }

    /// The order in which the next pass tries the nodes, as indexes into the list.
    pub fn attempt_order(&self) -> Vec<usize> {
        let len = self.urls.len();
        let start = self.next.load(Ordering::Acquire);
        (0..len).map(|step| (start + step) % len.max(1)).collect()
    }

    /// The next pass starts after the node at `index`: it could not be reached, or it
    /// was reached and a next pass only happens once that connection is lost.
    fn start_after(&self, index: usize) {
        self.next
            .store((index + 1) % self.urls.len().max(1), Ordering::Release);
    }

    /// Connects to the first node of this pass that accepts, naming the connection `name`
    /// on the broker. When none does, the last node's error comes back (each node's error
    /// is logged).
    pub async fn connect(&self, name: &str) -> lapin::Result<Connection> {
        let many = self.urls.len() > 1;
        let outcome = self
            .pass(|index| async move {
                let url = &self.urls[index];
                let props = ConnectionProperties::default().with_connection_name(name.into());
                let attempt = Connection::connect(url, props).await;
                match &attempt {
                    Ok(_) => tracing::info!(
                        node = %node_name(url),
                        connection = name,
                        "Connected to the message broker."
                    ),
                    Err(error) if many => tracing::warn!(
                        node = %node_name(url),
                        connection = name,
                        %error,
                        "Cannot connect to this broker node; trying the next."
                    ),
                    Err(_) => {}
                }
                attempt
            })
            .await;
        outcome.unwrap_or_else(|| {
            Err(
                std::io::Error::other("no broker URL is configured: set amqp.url or amqp.urls")
                    .into(),
            )
        })
    }

    /// Tries the nodes in this pass's order with `attempt` until one succeeds; `None`
    /// when there are no nodes.
    async fn pass<T, E, F, Fut>(&self, mut attempt: F) -> Option<Result<T, E>>
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let mut last = None;
        for index in self.attempt_order() {
            let outcome = attempt(index).await;
            self.start_after(index);
            if outcome.is_ok() {
                return Some(outcome);
            }
            last = Some(outcome);
        }
        last
    }
}

/// `host:port/vhost` of an AMQP URL, without its credentials (for logs).
pub fn node_name(url: &str) -> String {
    match url.parse::<lapin::uri::AMQPUri>() {
        Ok(uri) => format!(
            "{}:{}/{}",
            uri.authority.host, uri.authority.port, uri.vhost
        ),
        Err(_) => "(an invalid URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Brokers {
        Brokers::new(vec![
            "amqp://guest:guest@node1:5672/%2f".into(),
            "amqp://guest:guest@node2:5672/%2f".into(),
            "amqp://guest:guest@node3:5672/%2f".into(),
        ])
    }

    #[test]
    fn the_first_pass_follows_the_configured_order() {
        assert_eq!(three().attempt_order(), vec![0, 1, 2]);
    }

    /// Runs one pass with the nodes in `up` accepting; the nodes tried, in order.
    async fn pass_with(brokers: &Brokers, up: &[usize]) -> (Vec<usize>, Option<usize>) {
        let mut tried = Vec::new();
        let outcome = brokers
            .pass(|index| {
                tried.push(index);
                let accepts = up.contains(&index);
                async move { if accepts { Ok(index) } else { Err(index) } }
            })
            .await;
        (tried, outcome.and_then(Result::ok))
    }

    #[tokio::test]
    async fn a_pass_starts_after_the_node_last_lost_or_refused() {
        let brokers = three();
        // Node 1 is down: the first pass lands on node 2.
        assert_eq!(pass_with(&brokers, &[1, 2]).await, (vec![0, 1], Some(1)));
        // The connection to node 2 was lost: node 3 first, node 2 last.
        assert_eq!(brokers.attempt_order(), vec![2, 0, 1]);
        assert_eq!(pass_with(&brokers, &[0, 1]).await, (vec![2, 0], Some(0)));
        // All down: every node once, and the next pass starts after the last refusal.
        assert_eq!(pass_with(&brokers, &[]).await, (vec![1, 2, 0], None));
        assert_eq!(brokers.attempt_order(), vec![1, 2, 0]);
        assert_eq!(pass_with(&brokers, &[0]).await, (vec![1, 2, 0], Some(0)));
    }

    #[tokio::test]
    async fn a_single_broker_is_always_tried_alone() {
        let brokers = Brokers::new(vec!["amqp://127.0.0.1:5672/%2f".into()]);
        assert_eq!(pass_with(&brokers, &[]).await, (vec![0], None));
        assert_eq!(pass_with(&brokers, &[0]).await, (vec![0], Some(0)));
        assert_eq!(brokers.attempt_order(), vec![0]);
    }

    #[tokio::test]
    async fn no_broker_means_no_attempt() {
        let brokers = Brokers::new(Vec::new());
        assert_eq!(pass_with(&brokers, &[0]).await, (vec![], None));
        assert!(brokers.connect("leadpipe connect test").await.is_err());
    }

    #[test]
    fn logged_node_names_leave_out_credentials() {
        assert_eq!(
            node_name("amqp://leadpipe:s3cret@rabbit-2.internal:5682/prod"),
            "rabbit-2.internal:5682/prod"
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_skipped_for_the_next_node() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let brokers = Brokers::new(vec![
            format!("amqp://guest:guest@127.0.0.1:{closed}/%2f"),
            crate::testing::amqp_url(),
        ]);
        let connection = brokers
            .connect("leadpipe connect test")
            .await
            .expect("the second URL is the real broker");
        assert!(connection.status().connected());
        // The real broker is last tried now: a lost connection moves on to the next node.
        assert_eq!(brokers.attempt_order(), vec![0, 1]);
        let _ = connection.close(200, "done".into()).await;
    }
}
