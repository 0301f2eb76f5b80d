//! Keyed exchange: routes every row to the worker that owns its key, so per-key state
//! (windows, detector statistics) lives on exactly one worker. Batches are split by key
//! hash; with one worker the stream passes through untouched.

use arrow::array::{ArrayRef, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::record_batch::RecordBatch;
use datafusion::common::hash_utils::{RandomState, create_hashes};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Exchange, Operator};

use super::batch::Batch;
use super::node::{BatchStream, BuildEnv};

/// Seed of the key hash; fixed so every process of a cluster routes alike.
const KEY_HASH_SEED: u64 = 0x00ed_9ef1_0000_0001;

/// Splits a batch into one batch per worker by the hash of its key columns. Rows whose key
/// columns are missing go to worker 0 (the plan has checked the fields exist).
pub fn partition_by_key(
    batch: &RecordBatch,
    key: &[String],
    peers: usize,
) -> Vec<(u64, RecordBatch)> {
    let columns: Vec<ArrayRef> = key
        .iter()
        .filter_map(|k| batch.column_by_name(k).cloned())
        .collect();
    let mut hashes = vec![0u64; batch.num_rows()];
    if !columns.is_empty()
        && create_hashes(
            &columns,
            &RandomState::with_seed(KEY_HASH_SEED),
            &mut hashes,
        )
        .is_err()
    {
        hashes.fill(0);
    }
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); peers];
    for (row, hash) in hashes.iter().enumerate() {
        rows[(hash % peers as u64) as usize].push(row as u32);
    }
    rows.into_iter()
        .enumerate()
        .filter(|(_, r)| !r.is_empty())
        .filter_map(|(worker, r)| {
            let part = if r.len() == batch.num_rows() {
                batch.clone()
            } else {
                take_record_batch(batch, &UInt32Array::from(r)).ok()?
            };
            Some((worker as u64, part))
        })
        .collect()
}

/// Routes rows to the worker owning their key.
pub fn exchange_by_key<'scope>(
    stream: BatchStream<'scope>,
    key: &[String],
    node: &str,
    env: &BuildEnv,
) -> BatchStream<'scope> {
    let peers = env.peers;
    if peers == 1 {
        return stream;
    }
    let key = key.to_vec();
    stream
        .unary::<timely::container::CapacityContainerBuilder<Vec<(u64, Batch)>>, _, _, _>(
            Pipeline,
            &format!("partition[{node}]"),
            move |_cap, _info| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        let mut session = output.session(&cap);
                        for batch in data.drain(..) {
                            for (worker, part) in partition_by_key(&batch, &key, peers) {
                                session.give((worker, Batch(part)));
                            }
                        }
                    });
                }
            },
        )
        .exchange(|(worker, _)| *worker)
        .unary(Pipeline, &format!("keyed[{node}]"), |_cap, _info| {
            |input, output| {
                input.for_each(|cap, data| {
                    output
                        .session(&cap)
                        .give_iterator(data.drain(..).map(|(_, batch)| batch));
                });
            }
        })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn every_row_lands_on_exactly_one_worker_and_equal_keys_together() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let keys: Vec<Option<String>> = (0..1000)
            .map(|i| {
                if i % 97 == 0 {
                    None
                } else {
                    Some(format!("k{}", i % 37))
                }
            })
            .collect();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(keys.clone())),
                Arc::new(Int64Array::from_iter_values(0..1000)),
            ],
        )
        .unwrap();
        let parts = partition_by_key(&batch, &["k".to_string()], 3);
        let mut owner = std::collections::HashMap::new();
        let mut seen = 0;
        for (worker, part) in &parts {
            let k = part
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            for i in 0..part.num_rows() {
                let key = k.is_valid(i).then(|| k.value(i).to_string());
                assert_eq!(
                    *owner.entry(key).or_insert(*worker),
                    *worker,
                    "a key was split"
                );
                seen += 1;
            }
        }
        assert_eq!(seen, 1000);
        assert!(parts.len() > 1, "37 keys should spread over 3 workers");
    }
}
