//! The edge's forwarder: drains the spool into Kafka in order, retrying with backoff.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::client::LinkStats;
use super::frames::{FrameProducer, SendRefused};
use crate::error::ConnectorError;
use crate::spool::Spool;

/// Frames in flight at most between the spool and the broker.
const MAX_IN_FLIGHT: usize = 2048;
/// First and largest pause after a failed delivery.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(10));

/// Drains `spool` into Kafka in order until `stop` is set and the spool is empty (or
/// `stop_now` is set). A failed delivery rewinds to the first undelivered frame and retries
/// after an exponential backoff with jitter, with a producer from `new_producer`; duplicates
/// this may cause are dropped by the cloud (same edge, stream and sequence).
pub fn forward(
    spool: &Spool,
    producer: &mut FrameProducer,
    new_producer: &dyn Fn() -> Result<FrameProducer, ConnectorError>,
    stats: &LinkStats,
    stop: &AtomicBool,
    stop_now: &AtomicBool,
) -> Result<(), ConnectorError> {
    let mut next = spool.acknowledged();
    // Indices sent and not yet reported, in order, with whether they were delivered.
    let mut in_flight: std::collections::BTreeMap<u64, Option<bool>> = Default::default();
    let mut backoff = BACKOFF.0;
    let mut jitter_state = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    loop {
        if stop_now.load(Ordering::Relaxed) {
            return Ok(());
        }
        // Send what fits.
        let mut sent = 0;
        if in_flight.len() < MAX_IN_FLIGHT {
            for f in spool.read(next, MAX_IN_FLIGHT - in_flight.len())? {
                match producer.send(&f.topic, &f.frame, f.index) {
                    Ok(()) => {
                        in_flight.insert(f.index, None);
                        next = f.index + 1;
                        sent += 1;
                    }
                    Err(SendRefused::QueueFull) => break,
                    Err(SendRefused::Failed(e)) => return Err(e),
                }
            }
        }
        producer.poll(if sent == 0 {
            Duration::from_millis(20)
        } else {
            Duration::ZERO
        });
        let mut failed = false;
        for (index, ok) in producer.take_deliveries() {
            if let Some(slot) = in_flight.get_mut(&index) {
                *slot = Some(ok);
            }
            failed |= !ok;
        }
        // Acknowledge the delivered prefix.
        let mut upto = None;
        let mut delivered = 0;
        while let Some((&index, &Some(true))) = in_flight.first_key_value() {
            in_flight.remove(&index);
            upto = Some(index + 1);
            delivered += 1;
        }
        if let Some(upto) = upto {
            stats.delivered.fetch_add(delivered, Ordering::Relaxed);
            spool.acknowledge(upto)?;
            backoff = BACKOFF.0;
        }
        if failed {
            // Wait for every outstanding report, then resend from the first failure.
            while in_flight.values().any(Option::is_none) && !stop_now.load(Ordering::Relaxed) {
                producer.poll(Duration::from_millis(50));
                for (index, ok) in producer.take_deliveries() {
                    if let Some(slot) = in_flight.get_mut(&index) {
                        *slot = Some(ok);
                    }
                }
            }
            let first_failed = in_flight
                .iter()
                .find(|(_, ok)| **ok == Some(false))
                .map(|(i, _)| *i);
            if let Some(first) = first_failed {
                let resend = in_flight.range(first..).count() as u64;
                stats.retries.fetch_add(resend, Ordering::Relaxed);
                let delivered_before: Vec<u64> =
                    in_flight.range(..first).map(|(i, _)| *i).collect();
                if let Some(last) = delivered_before.last() {
                    spool.acknowledge(last + 1)?;
                }
                in_flight.clear();
                next = first;
                jitter_state ^= jitter_state << 13;
                jitter_state ^= jitter_state >> 7;
                jitter_state ^= jitter_state << 17;
                let jitter =
                    Duration::from_millis(jitter_state % (backoff.as_millis() as u64 / 2 + 1));
                let pause = backoff + jitter;
                stats
                    .backoff_ms
                    .store(pause.as_millis() as i64, Ordering::Relaxed);
                let until = Instant::now() + pause;
                while Instant::now() < until && !stop_now.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                stats.backoff_ms.store(0, Ordering::Relaxed);
                backoff = (backoff * 2).min(BACKOFF.1);
                // An idempotent producer whose sequence the broker no longer accepts (e.g.
                // after a broker restart) fails every later frame: resend with a new one
                // (a new producer id). The cloud drops whatever this sends twice.
                *producer = new_producer()?;
            }
        }
        if stop.load(Ordering::Relaxed) && in_flight.is_empty() && spool.stats().depth == 0 {
            return Ok(());
        }
    }
}
