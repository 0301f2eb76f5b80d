//! Tests of the window aggregator.
