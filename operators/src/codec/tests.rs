//! Tests of the codec: bit-exact round trips, the lossy bound, and hostile input (proptest),
//! plus the encodings chosen for sensor-shaped data and the error cases.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMillisecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, TimeUnit};
use proptest::prelude::*;

use super::*;

/// One generated column: its type tag, values (None = null) and whether the field is nullable.
#[derive(Debug, Clone)]
enum Values {
    Ts(Vec<Option<i64>>),
    I64(Vec<Option<i64>>),
    U64(Vec<Option<u64>>),
    F64(Vec<Option<f64>>),
    Str(Vec<Option<String>>),
    Bool(Vec<Option<bool>>),
}

impl Values {
    fn array(&self) -> ArrayRef {
        match self {
            Values::Ts(v) => Arc::new(TimestampMillisecondArray::from(v.clone())),
            Values::I64(v) => Arc::new(Int64Array::from(v.clone())),
            Values::U64(v) => Arc::new(UInt64Array::from(v.clone())),
            Values::F64(v) => Arc::new(Float64Array::from(v.clone())),
            Values::Str(v) => Arc::new(StringArray::from_iter(v.iter().cloned())),
            Values::Bool(v) => Arc::new(BooleanArray::from(v.clone())),
        }
    }
}

/// Integer sequences of the shapes the cascade distinguishes.
fn ints(n: usize) -> BoxedStrategy<Vec<i64>> {
    prop_oneof![
        prop::collection::vec(any::<i64>(), n),
        prop::collection::vec(-100i64..100, n),
        (any::<i64>(), prop::collection::vec(0i64..3, n)).prop_map(|(start, steps)| {
            steps
                .iter()
                .scan(start, |acc, s| {
                    *acc = acc.wrapping_add(*s);
                    Some(*acc)
                })
                .collect()
        }),
        any::<i64>().prop_map(move |v| vec![v; n]),
        prop::collection::vec((any::<i64>(), 1usize..20), 0..=n).prop_map(move |runs| {
            let mut v: Vec<i64> = runs
                .into_iter()
                .flat_map(|(x, l)| std::iter::repeat_n(x, l))
                .collect();
            v.resize(n, 7);
            v
        }),
        (1_767_225_600_000i64..1_800_000_000_000)
            .prop_map(move |start| { (0..n as i64).map(|i| start + i / 2).collect() }),
    ]
    .boxed()
}

/// Floats: special values, arbitrary bit patterns (NaN payloads included), smooth signals,
/// decimals and constants.
fn floats(n: usize) -> BoxedStrategy<Vec<f64>> {
    let special = prop_oneof![
        Just(f64::NAN),
        Just(f64::from_bits(0x7ff8_0000_dead_beef)),
        Just(f64::from_bits(0xfff0_0000_0000_0001)),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(0.0),
        Just(f64::MIN_POSITIVE),
        Just(f64::from_bits(1)),
        Just(f64::MAX),
        Just(f64::MIN),
        any::<f64>(),
    ];
    prop_oneof![
        prop::collection::vec(special, n),
        prop::collection::vec(any::<u64>().prop_map(f64::from_bits), n),
        (
            -1e6f64..1e6,
            0.0f64..10.0,
            prop::collection::vec(-1.0f64..1.0, n)
        )
            .prop_map(|(base, amp, noise)| noise
                .iter()
                .enumerate()
                .map(|(i, e)| base + amp * (i as f64 / 10.0).sin() + e)
                .collect()),
        prop::collection::vec(-100_000i64..100_000, n)
            .prop_map(|v| v.iter().map(|&x| x as f64 / 100.0).collect()),
        any::<f64>().prop_map(move |v| vec![v; n]),
    ]
    .boxed()
}

/// Strings: a small vocabulary, arbitrary unicode, long strings.
fn strings(n: usize) -> BoxedStrategy<Vec<String>> {
    prop_oneof![
        prop::collection::vec(
            prop::sample::select(vec![
                "dev-0001",
                "dev-0002",
                "sensor",
                "",
                "ünï-cödé ✓",
                "x"
            ]),
            n
        )
        .prop_map(|v| v.into_iter().map(String::from).collect()),
        prop::collection::vec(".{0,12}", n),
        prop::collection::vec("[a-zé]{0,3000}", n.min(6)).prop_map(move |v| (0..n)
            .map(|i| v.get(i % v.len().max(1)).cloned().unwrap_or_default())
            .collect()),
    ]
    .boxed()
}

/// Which rows are valid: all, none, random, sparse nulls.
fn validity(n: usize) -> BoxedStrategy<Vec<bool>> {
    prop_oneof![
        3 => Just(vec![true; n]),
        1 => Just(vec![false; n]),
        2 => prop::collection::vec(any::<bool>(), n),
        2 => prop::collection::vec(prop::bool::weighted(0.97), n),
    ]
    .boxed()
}

fn column(n: usize) -> BoxedStrategy<Values> {
    fn with<T: Clone>(v: Vec<T>, valid: &[bool]) -> Vec<Option<T>> {
        v.into_iter()
            .zip(valid)
            .map(|(x, &ok)| ok.then_some(x))
            .collect()
    }
    let v = validity(n);
    prop_oneof![
        (ints(n), v.clone()).prop_map(|(x, ok)| Values::Ts(with(x, &ok))),
        (ints(n), v.clone()).prop_map(|(x, ok)| Values::I64(with(x, &ok))),
        (ints(n), v.clone()).prop_map(|(x, ok)| {
            Values::U64(with(x.into_iter().map(|i| i as u64).collect(), &ok))
        }),
        (floats(n), v.clone()).prop_map(|(x, ok)| Values::F64(with(x, &ok))),
        (strings(n), v.clone()).prop_map(|(x, ok)| Values::Str(with(x, &ok))),
        (
            prop_oneof![
                prop::collection::vec(any::<bool>(), n),
                prop::collection::vec(prop::bool::weighted(0.99), n),
                Just(vec![false; n]),
            ],
            v
        )
            .prop_map(|(x, ok)| Values::Bool(with(x, &ok))),
    ]
    .boxed()
}

/// A batch of 0..300 rows and 0..6 columns, sometimes a slice of a larger one.
fn batch() -> impl Strategy<Value = RecordBatch> {
    prop_oneof![
        1 => Just(0usize),
        1 => Just(1usize),
        6 => 2usize..300,
    ]
    .prop_flat_map(|n| {
        (
            prop::collection::vec((column(n), any::<bool>()), 0..6),
            0..=n,
            0..=n,
            Just(n),
        )
    })
    .prop_map(|(cols, a, b, n)| {
        let fields: Vec<Field> = cols
            .iter()
            .enumerate()
            .map(|(i, (c, nullable))| {
                let a = c.array();
                Field::new(
                    format!("c{i}"),
                    a.data_type().clone(),
                    *nullable || a.null_count() > 0,
                )
            })
            .collect();
        let arrays: Vec<ArrayRef> = cols.iter().map(|(c, _)| c.array()).collect();
        let batch = RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )
        .unwrap();
        let (lo, hi) = (a.min(b), a.max(b));
        if (a + b) % 3 == 0 {
            batch.slice(lo, hi - lo)
        } else {
            batch
        }
    })
}

/// Asserts two arrays hold the same rows: same type, validity and values, floats by bits.
fn assert_same(a: &dyn Array, b: &dyn Array, what: &str) {
    assert_eq!(a.data_type(), b.data_type(), "{what}");
    assert_eq!(a.len(), b.len(), "{what}");
    for i in 0..a.len() {
        assert_eq!(a.is_valid(i), b.is_valid(i), "{what} row {i} validity");
    }
    if let (Some(x), Some(y)) = (
        a.as_primitive_opt::<Float64Type>(),
        b.as_primitive_opt::<Float64Type>(),
    ) {
        for i in 0..a.len() {
            if a.is_valid(i) {
                assert_eq!(x.value(i).to_bits(), y.value(i).to_bits(), "{what} row {i}");
            }
        }
    } else {
        assert_eq!(a.to_data(), b.to_data(), "{what}");
    }
}

fn assert_round_trip(batch: &RecordBatch, opts: &CodecOptions) -> EncodeStats {
    let (frame, stats) = encode_with_stats(batch, opts).unwrap();
    assert_eq!(stats.wire_bytes, frame.len());
    let back = decode(&frame).unwrap();
    assert_eq!(back.schema(), batch.schema());
    assert_eq!(back.num_rows(), batch.num_rows());
    for (i, (a, b)) in batch.columns().iter().zip(back.columns()).enumerate() {
        assert_same(
            a.as_ref(),
            b.as_ref(),
            &format!("column {i} ({})", stats.columns[i].encoding),
        );
    }
    // Equal batches give equal frames (the encoder is deterministic).
    assert_eq!(encode(&back, opts).unwrap(), frame);
    stats
}

/// Recomputes a frame's checksum after a deliberate change.
fn reseal(frame: &mut [u8]) {
    let n = frame.len();
    if n >= 8 {
        let sum = wire::checksum(&frame[..n - 4]);
        frame[n - 4..].copy_from_slice(&sum.to_le_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_batch_round_trips_bit_exactly(batch in batch(), fast in any::<bool>()) {
        let opts = if fast { CodecOptions::fast() } else { CodecOptions::default() };
        assert_round_trip(&batch, &opts);
    }

    #[test]
    fn lossy_columns_stay_within_their_bound(
        values in (1usize..400).prop_flat_map(|n| (floats(n), validity(n))),
        log_e in -12.0f64..8.0,
        fast in any::<bool>(),
    ) {
        let e = 10f64.powf(log_e);
        let (x, ok) = values;
        let col: Float64Array = x.iter().zip(&ok).map(|(v, o)| o.then_some(*v)).collect();
        let exact: Float64Array = col.clone();
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Float64, true),
            Field::new("w", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(col.clone()), Arc::new(exact)]).unwrap();
        let mut opts = CodecOptions::default().with_error_bound("v", e).with_error_bound("absent", 1.0);
        if fast {
            opts.mode = CodecMode::Fast;
        }
        let (frame, stats) = encode_with_stats(&batch, &opts).unwrap();
        // Column v may come out lossless when that is smaller; w has no bound.
        prop_assert!(!stats.columns[1].lossy);
        let back = decode(&frame).unwrap();
        let v = back.column(0).as_primitive::<Float64Type>();
        for i in 0..col.len() {
            prop_assert_eq!(v.is_valid(i), col.is_valid(i));
            if col.is_valid(i) {
                let (a, b) = (col.value(i), v.value(i));
                if a.is_finite() {
                    prop_assert!((b - a).abs() <= e, "row {}: {} -> {} (e = {})", i, a, b, e);
                } else {
                    prop_assert_eq!(a.to_bits(), b.to_bits());
                }
            }
        }
        // The column without a bound is exact.
        assert_same(batch.column(1).as_ref(), back.column(1).as_ref(), "w");
    }

    #[test]
    fn truncated_or_flipped_frames_are_errors(
        batch in batch(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let frame = encode(&batch, &CodecOptions::default()).unwrap();
        let cut = cut.index(frame.len());
        prop_assert!(decode(&frame[..cut]).is_err());
        let mut bad = frame.clone();
        for (i, x) in &flips {
            let i = i.index(bad.len());
            bad[i] ^= x;
        }
        if bad != frame {
            let err = decode(&bad).unwrap_err();
            prop_assert!(err.is_data_error(), "{err}");
        }
    }

    #[test]
    fn hostile_frames_with_a_valid_checksum_never_panic(
        batch in batch(),
        fast in any::<bool>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let opts = if fast { CodecOptions::fast() } else { CodecOptions::default() };
        let mut frame = encode(&batch, &opts).unwrap();
        for (i, x) in &flips {
            let i = i.index(frame.len());
            frame[i] ^= x;
        }
        reseal(&mut frame);
        // Ok or Err, never a panic; an Ok batch is valid Arrow.
        if let Ok(b) = decode(&frame) {
            for c in b.columns() {
                c.to_data().validate_full().unwrap();
            }
        }
        let keep = cut.index(frame.len()).max(8);
        let mut short = frame[..keep.min(frame.len())].to_vec();
        reseal(&mut short);
        let _ = decode(&short);
    }

    #[test]
    fn random_bytes_after_the_magic_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut frame = b"EFC\x01".to_vec();
        frame.extend_from_slice(&body);
        frame.extend_from_slice(&[0; 4]);
        reseal(&mut frame);
        let _ = decode(&frame);
    }
}

/// A batch shaped like the generator's output: 100 devices x 2 sensors at 10/s.
fn sensor_batch(rows: usize) -> RecordBatch {
    let mut ts = Vec::new();
    let mut device = Vec::new();
    let mut site = Vec::new();
    let mut sensor = Vec::new();
    let mut value = Vec::new();
    for r in 0..rows {
        let (slot, s) = (r / 2, r % 2);
        let d = slot % 100;
        ts.push(1_767_225_600_000 + slot as i64);
        device.push(format!("dev-{:04}", d + 1));
        site.push(format!("site-{:02}", d % 10 + 1));
        sensor.push(["vibration", "temperature"][s]);
        let base = if s == 0 { 1.0 } else { 60.0 };
        value.push(base + d as f64 * 0.01 + ((r * 7919) % 1000) as f64 * 1e-4);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("device", DataType::Utf8, true),
        Field::new("site", DataType::Utf8, true),
        Field::new("sensor", DataType::Utf8, true),
        Field::new("value", DataType::Float64, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(TimestampMillisecondArray::from(ts)),
            Arc::new(StringArray::from(device)),
            Arc::new(StringArray::from(site)),
            Arc::new(StringArray::from(sensor)),
            Arc::new(Float64Array::from(value)),
        ],
    )
    .unwrap()
}

#[test]
fn sensor_batches_get_dictionaries_and_tiny_timestamps() {
    let batch = sensor_batch(8192);
    for opts in [CodecOptions::default(), CodecOptions::fast()] {
        let stats = assert_round_trip(&batch, &opts);
        let enc: Vec<&str> = stats.columns.iter().map(|c| c.encoding.as_str()).collect();
        assert!(enc[1].starts_with("dict[100]"), "{enc:?}");
        assert!(enc[2].starts_with("dict[10]"), "{enc:?}");
        assert!(enc[3].starts_with("dict[2]"), "{enc:?}");
        // Timestamps and names cost well under a byte per row.
        for c in &stats.columns[..4] {
            assert!(c.wire_bytes * 8 < stats.rows, "{c:?}");
        }
        assert!(stats.ratio() > 4.0, "{stats:?}");
    }
}

#[test]
fn window_columns_that_repeat_are_constant() {
    let n = 1000;
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "window_start",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
        Field::new("count", DataType::Int64, true),
        Field::new("ok", DataType::Boolean, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(TimestampMillisecondArray::from(vec![1_767_225_600_000; n])),
            Arc::new(Int64Array::from(vec![100; n])),
            Arc::new(BooleanArray::from(vec![true; n])),
        ],
    )
    .unwrap();
    let stats = assert_round_trip(&batch, &CodecOptions::default());
    assert_eq!(stats.columns[0].encoding, "const");
    assert_eq!(stats.columns[1].encoding, "const");
    assert_eq!(stats.columns[2].encoding, "all-true");
    assert!(stats.wire_bytes < 80, "{stats:?}");
}

#[test]
fn metadata_and_columnless_batches_round_trip() {
    let meta: HashMap<String, String> = [("pipeline".to_string(), "p".to_string())].into();
    let field = Field::new("v", DataType::UInt64, false).with_metadata(meta.clone());
    let schema = Arc::new(Schema::new_with_metadata(vec![field], meta));
    let batch = RecordBatch::try_new(
        schema,
        vec![Arc::new(UInt64Array::from(vec![u64::MAX, 0, 1 << 63]))],
    )
    .unwrap();
    assert_round_trip(&batch, &CodecOptions::default());
    let empty = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(5)),
    )
    .unwrap();
    assert_round_trip(&empty, &CodecOptions::default());
}

#[test]
fn unsupported_types_and_bad_options_are_user_errors() {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "small",
        DataType::Int32,
        true,
    )]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(vec![1]))]).unwrap();
    let err = encode(&batch, &CodecOptions::default()).unwrap_err();
    assert!(err.is_user_error());
    assert!(err.to_string().contains("\"small\""), "{err}");
    for e in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::MAX] {
        let opts = CodecOptions::default().with_error_bound("v", e);
        assert!(
            matches!(Encoder::new(opts), Err(CodecError::InvalidOptions(_))),
            "{e}"
        );
    }
    let twice = CodecOptions::default()
        .with_error_bound("v", 1.0)
        .with_error_bound("v", 2.0);
    assert!(Encoder::new(twice).is_err());
}

#[test]
fn foreign_bytes_newer_versions_and_limits_are_reported() {
    assert!(matches!(decode(b"PAR1...."), Err(CodecError::Corrupt(_))));
    assert!(matches!(decode(b""), Err(CodecError::Corrupt(_))));
    let frame = encode(&sensor_batch(300), &CodecOptions::default()).unwrap();
    let mut newer = frame.clone();
    newer[3] = VERSION + 1;
    assert!(matches!(
        decode(&newer),
        Err(CodecError::Version { found, .. }) if found == VERSION + 1
    ));
    let tight = DecodeLimits {
        max_rows: 299,
        ..DecodeLimits::default()
    };
    assert!(matches!(
        Decoder::new(tight).decode(&frame),
        Err(CodecError::LimitExceeded(_))
    ));
    let mut flipped = frame.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    assert!(matches!(decode(&flipped), Err(CodecError::Checksum { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// pco is the one decoder here that is not this module's code: hammer it directly.
    #[test]
    fn corrupted_pco_streams_never_panic(
        values in prop::collection::vec(any::<i64>().prop_map(|x| x % 1000), 32..600),
        floats in any::<bool>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..5),
    ) {
        let mut out = Vec::new();
        if floats {
            let f: Vec<f64> = values.iter().map(|&v| v as f64 / 100.0 + 0.5).collect();
            ints::put_pco(&f, ints::PCO_FLOAT_LEVEL, &mut out).unwrap();
        } else {
            ints::put_pco(&values, ints::PCO_LEVEL, &mut out).unwrap();
        }
        for (i, x) in &flips {
            let i = i.index(out.len());
            out[i] ^= x;
        }
        if floats {
            let _ = ints::read_pco::<f64>(&mut wire::Reader::new(&out), values.len());
        } else {
            let _ = ints::read_pco::<i64>(&mut wire::Reader::new(&out), values.len());
        }
    }
}
