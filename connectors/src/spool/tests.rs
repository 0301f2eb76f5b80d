//! Spool tests: order, restart recovery, replay idempotence, full policies, and a property
//! test against a model queue.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::frame::{FrameHeader, FrameKind};

fn frame(stream: &str, sequence: u64, payload_len: usize) -> Frame {
    Frame {
        header: FrameHeader {
            pipeline: "p".into(),
            stream: stream.into(),
            edge_id: "e".into(),
            incarnation: 0,
            sequence,
            watermark: sequence as i64,
            schema_fingerprint: 1,
            kind: FrameKind::Data,
        },
        payload: vec![sequence as u8; payload_len],
        signature: None,
    }
}

fn never() -> bool {
    false
}

fn options(max_bytes: u64, segment_bytes: u64, when_full: WhenFull) -> SpoolOptions {
    SpoolOptions {
        max_bytes,
        segment_bytes,
        when_full,
    }
}

fn sequences(frames: &[SpooledFrame]) -> Vec<u64> {
    frames.iter().map(|f| f.frame.header.sequence).collect()
}

#[test]
fn frames_come_back_in_order_and_acknowledged_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), options(1 << 20, 300, WhenFull::Block)).unwrap();
    for seq in 1..=10 {
        let appended = spool
            .append("t", &frame("s", seq, 100), false, &never)
            .unwrap();
        assert_eq!(appended, Appended::Stored(seq - 1));
    }
    let all = spool.read(0, 100).unwrap();
    assert_eq!(sequences(&all), (1..=10).collect::<Vec<_>>());
    assert!(all.iter().all(|f| f.topic == "t"));
    assert_eq!(sequences(&spool.read(7, 2).unwrap()), vec![8, 9]);
    let segments_before = fs::read_dir(dir.path()).unwrap().count();
    spool.acknowledge(8).unwrap();
    assert!(fs::read_dir(dir.path()).unwrap().count() < segments_before);
    assert_eq!(
        sequences(&spool.read(spool.acknowledged(), 100).unwrap()),
        vec![9, 10]
    );
    assert_eq!(spool.stats().depth, 2);
}

#[test]
fn a_spool_keeps_its_incarnation_and_a_fresh_directory_gets_another() {
    let dir = tempfile::tempdir().unwrap();
    let first = Spool::open(dir.path(), options(1 << 20, 250, WhenFull::Block))
        .unwrap()
        .incarnation();
    let reopened = Spool::open(dir.path(), options(1 << 20, 250, WhenFull::Block))
        .unwrap()
        .incarnation();
    assert_ne!(first, 0);
    assert_eq!(first, reopened, "a restart keeps the sequence space");
    let text = fs::read_to_string(dir.path().join("incarnation")).unwrap();
    assert_eq!(u64::from_str_radix(text.trim(), 16).unwrap(), first);

    let fresh = tempfile::tempdir().unwrap();
    let other = Spool::open(fresh.path(), options(1 << 20, 250, WhenFull::Block))
        .unwrap()
        .incarnation();
    assert_ne!(
        first, other,
        "a re-provisioned edge starts a new sequence space"
    );

    fs::write(dir.path().join("incarnation"), "not hex").unwrap();
    let err = Spool::open(dir.path(), options(1 << 20, 250, WhenFull::Block)).unwrap_err();
    assert!(
        err.to_string().contains("remove the spool directory"),
        "{err}"
    );
}

#[test]
fn a_reopened_spool_resumes_and_skips_replayed_sequences() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = Spool::open(dir.path(), options(1 << 20, 250, WhenFull::Block)).unwrap();
        for seq in 1..=6 {
            spool
                .append("t", &frame("s", seq, 100), false, &never)
                .unwrap();
        }
        spool.acknowledge(4).unwrap();
        // dropped without sync: as after kill -9
    }
    // A torn record at the end, as a crash mid-write leaves it.
    let last = fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max()
        .unwrap();
    let mut bytes = fs::read(&last).unwrap();
    bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
    fs::write(&last, &bytes).unwrap();

    let spool = Spool::open(dir.path(), options(1 << 20, 250, WhenFull::Block)).unwrap();
    // A replay regenerates sequences 1..=6; only 7 and 8 are new.
    for seq in 1..=8 {
        let appended = spool
            .append("t", &frame("s", seq, 100), false, &never)
            .unwrap();
        assert_eq!(
            matches!(appended, Appended::Stored(_)),
            seq > 6,
            "seq {seq}"
        );
    }
    let from = spool.acknowledged();
    assert!(from <= 4);
    let pending = sequences(&spool.read(from, 100).unwrap());
    assert_eq!(pending.last(), Some(&8));
    assert!(pending.windows(2).all(|w| w[1] == w[0] + 1), "{pending:?}");
    assert!(pending.contains(&5));
}

#[test]
fn drop_policy_drops_old_summaries_and_keeps_every_exception() {
    // A record is about 380 bytes (100 of payload): the 12 exceptions fit in 6000, the 60
    // frames do not.
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(
        dir.path(),
        options(6_000, 600, WhenFull::DropOldestSummaries),
    )
    .unwrap();
    let started = Instant::now();
    let deadline = || started.elapsed() > Duration::from_secs(10);
    for seq in 1..=60 {
        let exception = seq % 5 == 0;
        let stream = if exception { "exceptions" } else { "summaries" };
        let appended = spool
            .append("t", &frame(stream, seq, 100), exception, &deadline)
            .unwrap();
        assert_ne!(appended, Appended::Stopped, "{seq}: {:?}", spool.stats());
    }
    let stats = spool.stats();
    assert!(stats.bytes <= 6_000, "{stats:?}");
    assert!(stats.dropped > 0, "{stats:?}");
    let left = spool.read(0, 1000).unwrap();
    let exceptions: Vec<u64> = left
        .iter()
        .filter(|f| f.frame.header.stream == "exceptions")
        .map(|f| f.frame.header.sequence)
        .collect();
    assert_eq!(exceptions, (1..=12).map(|i| i * 5).collect::<Vec<_>>());
    let summaries = left.len() - exceptions.len();
    assert_eq!(stats.dropped as usize + summaries, 48);
    // The newest summaries are the ones kept.
    let newest = left
        .iter()
        .filter(|f| f.frame.header.stream == "summaries")
        .map(|f| f.frame.header.sequence)
        .max();
    assert_eq!(newest, Some(59));
}

#[test]
fn block_policy_waits_for_the_forwarder() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(dir.path(), options(1_000, 300, WhenFull::Block)).unwrap());
    // Fill it: an append that would have to wait stops at once instead.
    let mut seq = 0;
    loop {
        seq += 1;
        assert!(seq < 100, "a 1000-byte spool took 100 frames");
        let appended = spool
            .append("t", &frame("s", seq, 150), false, &|| true)
            .unwrap();
        if appended == Appended::Stopped {
            break;
        }
    }
    let stored = seq - 1;
    let forwarder = {
        let spool = spool.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            // The wait is visible while it lasts (edgeflow_spool_blocked_ms), not silent.
            let blocked_ms = spool.stats().blocked_ms;
            spool.acknowledge(stored).unwrap();
            blocked_ms
        })
    };
    let started = Instant::now();
    let appended = spool
        .append("t", &frame("s", seq, 150), false, &|| {
            started.elapsed() > Duration::from_secs(10)
        })
        .unwrap();
    let blocked_ms = forwarder.join().unwrap();
    assert!(matches!(appended, Appended::Stored(_)), "{appended:?}");
    assert!(started.elapsed() >= Duration::from_millis(90));
    assert!((50..10_000).contains(&blocked_ms), "{blocked_ms}");
    assert_eq!(spool.stats().blocked_ms, 0);

    let stop = AtomicBool::new(true);
    let full_dir = tempfile::tempdir().unwrap();
    let full = Spool::open(full_dir.path(), options(10, 300, WhenFull::Block)).unwrap();
    full.append("t", &frame("s", 1, 50), false, &never).unwrap();
    let stopped = full
        .append("t", &frame("s", 2, 50), false, &|| {
            stop.load(Ordering::SeqCst)
        })
        .unwrap();
    assert_eq!(stopped, Appended::Stopped);
}

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Acknowledge(u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..300).prop_map(Op::Append),
        2 => any::<u8>().prop_map(Op::Acknowledge),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The spool behaves as a FIFO queue across acknowledgements and restarts: what is read
    /// from the acknowledged position is exactly what was appended and not acknowledged
    /// (a restart may re-deliver acknowledged frames, never lose or reorder any).
    #[test]
    fn spool_matches_a_model_queue(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(1 << 20, 700, WhenFull::Block);
        let mut spool = Spool::open(dir.path(), opts.clone()).unwrap();
        let mut model: VecDeque<(u64, u64)> = VecDeque::new(); // (index, sequence)
        let mut next_seq = 1;
        for op in ops {
            match op {
                Op::Append(len) => {
                    let appended = spool.append("t", &frame("s", next_seq, len), false, &never).unwrap();
                    let Appended::Stored(index) = appended else { panic!("{appended:?}") };
                    model.push_back((index, next_seq));
                    next_seq += 1;
                }
                Op::Acknowledge(n) => {
                    let upto = model.get(n as usize % (model.len() + 1)).map_or(
                        model.back().map_or(spool.acknowledged(), |b| b.0 + 1),
                        |m| m.0,
                    );
                    spool.acknowledge(upto).unwrap();
                    while model.front().is_some_and(|m| m.0 < upto) {
                        model.pop_front();
                    }
                }
                Op::Reopen => {
                    drop(spool);
                    spool = Spool::open(dir.path(), opts.clone()).unwrap();
                }
            }
            let read = spool.read(spool.acknowledged(), usize::MAX).unwrap();
            let got: Vec<(u64, u64)> = read.iter().map(|f| (f.index, f.frame.header.sequence)).collect();
            // After a reopen the read position may be earlier than the model's head: the
            // surplus must be a prefix of already acknowledged frames, in order.
            let surplus = got.len().checked_sub(model.len()).expect("frames lost");
            prop_assert_eq!(&got[surplus..], &model.iter().copied().collect::<Vec<_>>()[..]);
            prop_assert!(got.windows(2).all(|w| w[1].0 == w[0].0 + 1 && w[1].1 == w[0].1 + 1));
        }
    }
}
