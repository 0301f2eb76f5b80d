//! Kafka clients' common ground: how to reach the cluster ([`KafkaSettings`]), connection
//! health ([`LinkStats`]) and the librdkafka callbacks that feed it, topic creation, and the
//! partition assignment of readers outside a consumer group.
//!
//! Calls that wait for the broker (creating topics, reading metadata) never run on the
//! caller's thread: a timely worker or a control thread that asked the broker a question
//! while it is unreachable would stall for seconds each time, and hold up the process's
//! shutdown with it. [`create_topic_early`] and [`PartitionFinder`] ask from a thread of
//! their own.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

use crate::error::ConnectorError;

/// How to reach a Kafka cluster.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `bootstrap.servers`, e.g. `127.0.0.1:9092`.
    pub brokers: String,
    /// Sent as `client.id`, shown in broker logs.
    pub client_id: String,
    /// Further librdkafka settings (`name`, `value`), applied last.
    pub extra: Vec<(String, String)>,
}

impl KafkaSettings {
    pub(super) fn config(&self) -> ClientConfig {
        self.config_with(&[])
    }

    /// The client configuration with `defaults` that the user's settings may override.
    pub(super) fn config_with(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id)
            .set("reconnect.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "5000")
            .set("log_level", "3");
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        for (k, v) in &self.extra {
            config.set(k, v);
        }
        config
    }
}

pub(super) fn kafka_error(context: String) -> impl FnOnce(KafkaError) -> ConnectorError {
    move |source| ConnectorError::Kafka {
        context,
        source: Box::new(source),
    }
}

/// Connection health shared by a client's callbacks and whoever reports metrics.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// False after librdkafka reported every broker down, true again once a request succeeds.
    pub connected: AtomicBool,
    /// Errors librdkafka reported (transport, all brokers down, ...).
    pub errors: AtomicU64,
    /// Frames the broker acknowledged.
    pub delivered: AtomicU64,
    /// Frames re-sent after a failed delivery.
    pub retries: AtomicU64,
    /// Milliseconds the forwarder is backing off for (0 when not).
    pub backoff_ms: AtomicI64,
}

/// librdkafka callbacks: errors go to the log and to [`LinkStats`].
#[derive(Clone)]
pub(super) struct Callbacks {
    pub(super) stats: Arc<LinkStats>,
    pub(super) deliveries: Arc<Mutex<Vec<(u64, bool)>>>,
}

impl ClientContext for Callbacks {
    fn error(&self, error: KafkaError, reason: &str) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.stats.connected.store(false, Ordering::Relaxed);
        }
        tracing::warn!(%error, reason, "kafka client error");
    }
}

impl ProducerContext for Callbacks {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, index: Box<u64>) {
        let ok = result.is_ok();
        if let Err((error, _)) = result {
            tracing::warn!(%error, index = *index, "kafka delivery failed");
        } else {
            self.stats.connected.store(true, Ordering::Relaxed);
        }
        // A poisoned lock only means a panic elsewhere; the Vec is still usable.
        let mut deliveries = self.deliveries.lock().unwrap_or_else(|p| p.into_inner());
        deliveries.push((*index, ok));
    }
}

impl ConsumerContext for Callbacks {}

/// Creates the topics that do not exist yet, with `partitions` partitions each.
pub fn ensure_topics(
    settings: &KafkaSettings,
    topics: &[String],
    partitions: i32,
    timeout: Duration,
) -> Result<(), ConnectorError> {
    let admin: AdminClient<DefaultClientContext> = settings
        .config()
        .create()
        .map_err(kafka_error("creating a Kafka admin client".into()))?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    // Both bounds: without the request timeout an unreachable broker holds the call for
    // librdkafka's socket timeout (a minute), and a stopping process with it.
    let options = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results = futures_executor::block_on(admin.create_topics(&new, &options)).map_err(
        kafka_error(format!("creating topics {}", topics.join(", "))),
    )?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(ConnectorError::Kafka {
                    context: format!("creating topic {topic}"),
                    source: Box::new(KafkaError::AdminOp(code)),
                });
            }
        }
    }
    Ok(())
}

/// Creates `topic` if it is missing, as a node starts, from a thread of its own (the node
/// does not wait). A failure (e.g. the broker is down) is logged: where the broker allows
/// it, the topic is created on first use.
pub(super) fn create_topic_early(settings: &KafkaSettings, topic: &str, partitions: i32) {
    let (settings, topic) = (settings.clone(), topic.to_string());
    let spawned = std::thread::Builder::new()
        .name("kafka-create-topic".into())
        .spawn(move || {
            if let Err(error) =
                ensure_topics(&settings, std::slice::from_ref(&topic), partitions, BROKER_CALL)
            {
                tracing::warn!(topic, error = %crate::error::chain(&error), "cannot create the topic yet");
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start a thread to create a topic");
    }
}

/// The bound of one call to the broker (creating topics, reading metadata).
const BROKER_CALL: Duration = Duration::from_secs(5);
/// How long a [`PartitionFinder`] waits between attempts.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Finds out, on a thread of its own, how many partitions of a topic a reader outside a
/// consumer group should read: it creates the topic when missing (with `configured`
/// partitions), reads the broker's metadata and applies [`partitions_to_read`], once a
/// second until it succeeds; every failed attempt is reported to the owner, which may count
/// and log it. Dropping the finder stops its thread at the next attempt.
struct PartitionFinder {
    results: Receiver<Result<i32, ConnectorError>>,
    stop: Arc<AtomicBool>,
}

impl PartitionFinder {
    /// Starts looking; the first `wait_attempts` metadata reads wait for a complete topic.
    fn start(
        settings: &KafkaSettings,
        topic: &str,
        configured: i32,
        wait_attempts: u32,
    ) -> PartitionFinder {
        let (sender, results) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let (settings, topic, stopped) = (settings.clone(), topic.to_string(), stop.clone());
        let find = move || {
            let metadata: BaseConsumer = match settings.config().create() {
                Ok(client) => client,
                Err(error) => {
                    let _ = sender.send(Err(kafka_error("creating a Kafka client".into())(error)));
                    return;
                }
            };
            let mut attempts = 0;
            while !stopped.load(Ordering::Relaxed) {
                let started = Instant::now();
                let found = ensure_topics(
                    &settings,
                    std::slice::from_ref(&topic),
                    configured,
                    BROKER_CALL,
                )
                .and_then(|()| topic_partitions(&metadata, &topic, BROKER_CALL))
                .and_then(|listed| {
                    attempts += 1;
                    partitions_to_read(&topic, listed, configured, attempts < wait_attempts)
                });
                let done = found.is_ok();
                if sender.send(found).is_err() || done {
                    return;
                }
                let next = started + RETRY_EVERY;
                while Instant::now() < next && !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        let spawned = std::thread::Builder::new()
            .name("kafka-partitions".into())
            .spawn(find);
        if let Err(error) = spawned {
            // The owner then finds the finder gone and starts another.
            tracing::warn!(%error, "cannot start a thread to read topic metadata");
        }
        PartitionFinder { results, stop }
    }

    /// What the finder has to say, waiting at most `timeout` for news.
    fn poll(&self, timeout: Duration) -> Finding {
        match self.results.recv_timeout(timeout) {
            Ok(Ok(count)) => Finding::Found(count),
            Ok(Err(error)) => Finding::Failed(error),
            Err(RecvTimeoutError::Timeout) => Finding::Pending,
            Err(RecvTimeoutError::Disconnected) => Finding::Gone,
        }
    }
}

/// News from a [`PartitionFinder`].
enum Finding {
    /// Nothing new yet.
    Pending,
    /// How many partitions to read.
    Found(i32),
    /// An attempt failed; the finder tries again.
    Failed(ConnectorError),
    /// The finder's thread ended without a count (it could not start or create its client).
    Gone,
}

impl Drop for PartitionFinder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The number of partitions `topic` lists in the broker's metadata.
fn topic_partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> Result<i32, ConnectorError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(kafka_error(format!("reading metadata of {topic}")))?;
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| ConnectorError::User(format!("topic {topic} does not exist")))?;
    if let Some(err) = t.error() {
        return Err(ConnectorError::Kafka {
            context: format!("reading metadata of {topic}"),
            source: Box::new(KafkaError::MetadataFetch(err.into())),
        });
    }
    Ok(t.partitions().len() as i32)
}

/// How many partitions of `topic` to read when it lists `listed` of the `configured` ones.
/// A topic created a moment ago may not list all its partitions yet, and reading only those
/// listed would miss the others for good: while `patient`, that is an error to retry. Once
/// not, an existing topic with fewer partitions than configured is read as it is.
pub(super) fn partitions_to_read(
    topic: &str,
    listed: i32,
    configured: i32,
    patient: bool,
) -> Result<i32, ConnectorError> {
    if listed == 0 || (listed < configured && patient) {
        return Err(ConnectorError::User(format!(
            "topic {topic} lists {listed} of {configured} partitions"
        )));
    }
    if listed < configured {
        tracing::warn!(
            topic,
            partitions = listed,
            expected = configured,
            "topic has fewer partitions than configured; reading those it has"
        );
    }
    Ok(listed)
}

/// Partitions `0..count` of `topic`, each from `start(partition)` (the beginning when
/// `None`).
pub(super) fn partition_list(
    topic: &str,
    count: i32,
    start: impl Fn(i32) -> Option<i64>,
) -> Result<TopicPartitionList, ConnectorError> {
    let mut list = TopicPartitionList::new();
    for partition in 0..count {
        let offset = start(partition).map_or(Offset::Beginning, Offset::Offset);
        list.add_partition_offset(topic, partition, offset)
            .map_err(kafka_error(format!("assigning {topic}/{partition}")))?;
    }
    Ok(list)
}

/// A reader outside any consumer group (the cloud's feed of a cut topic, a control topic's
/// tail) on its way to its partitions: a [`PartitionFinder`] looks for them off the
/// reader's thread, and [`Assignment::try_assign`] assigns them once found.
pub(super) struct Assignment {
    settings: KafkaSettings,
    topic: String,
    configured: i32,
    wait_attempts: u32,
    finder: Option<PartitionFinder>,
    assigned: bool,
}

impl Assignment {
    /// For `topic` with `configured` partitions; the first `wait_attempts` metadata reads
    /// wait for a complete topic ([`partitions_to_read`]).
    pub(super) fn new(
        settings: &KafkaSettings,
        topic: &str,
        configured: i32,
        wait_attempts: u32,
    ) -> Assignment {
        Assignment {
            settings: settings.clone(),
            topic: topic.to_string(),
            configured,
            wait_attempts,
            finder: None,
            assigned: false,
        }
    }

    /// Whether `consumer` reads its partitions: assigns them, each from `start(partition)`
    /// (the beginning when `None`), once they are known, waiting at most `timeout` for that.
    /// An error is an attempt that failed (the broker is down, the topic is incomplete);
    /// the search goes on by itself.
    pub(super) fn try_assign<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        timeout: Duration,
        start: impl Fn(i32) -> Option<i64>,
    ) -> Result<bool, ConnectorError> {
        if self.assigned {
            return Ok(true);
        }
        let finder = self.finder.get_or_insert_with(|| {
            PartitionFinder::start(
                &self.settings,
                &self.topic,
                self.configured,
                self.wait_attempts,
            )
        });
        let count = match finder.poll(timeout) {
            Finding::Pending => return Ok(false),
            Finding::Found(count) => count,
            Finding::Failed(error) => return Err(error),
            Finding::Gone => {
                self.finder = None;
                return Ok(false);
            }
        };
        let list = partition_list(&self.topic, count, start)?;
        consumer
            .assign(&list)
            .map_err(kafka_error("assigning partitions".into()))?;
        self.finder = None;
        self.assigned = true;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_is_read_once_it_lists_every_configured_partition() {
        assert_eq!(partitions_to_read("t", 4, 4, true).unwrap(), 4);
        assert_eq!(partitions_to_read("t", 6, 4, true).unwrap(), 6);
        assert!(partitions_to_read("t", 3, 4, true).is_err());
        assert!(partitions_to_read("t", 0, 4, true).is_err());
    }

    #[test]
    fn an_incomplete_topic_is_read_as_it_is_once_patience_runs_out() {
        assert_eq!(partitions_to_read("t", 3, 4, false).unwrap(), 3);
        // A topic with no partitions at all is never read.
        assert!(partitions_to_read("t", 0, 4, false).is_err());
    }

    #[test]
    fn each_partition_starts_where_its_reader_left_off_or_at_the_beginning() {
        let resumed = [(0, 17), (2, 5)];
        let list = partition_list("cut", 3, |p| {
            resumed.iter().find(|(q, _)| *q == p).map(|(_, o)| *o)
        })
        .unwrap();
        let got: Vec<(String, i32, Offset)> = list
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition(), e.offset()))
            .collect();
        let want = vec![
            ("cut".to_string(), 0, Offset::Offset(17)),
            ("cut".to_string(), 1, Offset::Beginning),
            ("cut".to_string(), 2, Offset::Offset(5)),
        ];
        assert_eq!(got, want);
    }
}
