//! Text encodings shared by sources and sinks: RFC 3339 timestamps and JSON-lines rows.
//!
//! Timestamps are written as `2026-01-01T00:00:01.000Z` (UTC, millisecond precision) and read
//! back from integer milliseconds or any RFC 3339 text, so every sink's output can be read
//! again by the file source.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};

use crate::error::Result;

/// Days since 1970-01-01 to a (year, month, day) civil date (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Appends `ms` (milliseconds since the epoch) as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(crate) fn push_rfc3339_ms(out: &mut Vec<u8>, ms: i64) {
    use std::io::Write;
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z"
    );
}

/// `ms` as an RFC 3339 string with millisecond precision.
pub fn rfc3339_ms(ms: i64) -> String {
    let mut out = Vec::with_capacity(24);
    push_rfc3339_ms(&mut out, ms);
    // Only ASCII digits and separators were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Parses a timestamp: integer milliseconds since the epoch, or RFC 3339 text (an offset is
/// honoured, no offset means UTC; sub-millisecond digits are truncated toward the past).
pub(crate) fn parse_timestamp_ms(text: &str) -> Option<i64> {
    let t = text.trim();
    let digits = t.strip_prefix('-').unwrap_or(t);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().ok();
    }
    // Our own parser covers every year 0000..=9999; arrow's (nanosecond based, so limited to
    // 1677..2262) accepts the rarer forms (time-zone names, `+07:30:00`).
    parse_rfc3339_ms(t).or_else(|| {
        string_to_timestamp_nanos(t)
            .ok()
            .map(|ns| ns.div_euclid(1_000_000))
    })
}

/// (year, month, day) to days since 1970-01-01 (inverse of `civil_from_days`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DD`, optionally followed by `THH:MM:SS[.fraction]` (or a space instead of
/// `T`) and `Z` / `+HH:MM` / `-HH:MM` (no offset: UTC).
fn parse_rfc3339_ms(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0u32, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_len = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if day == 0 || day > month_len {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    if b.len() == 10 {
        return Some(days * 86_400_000);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.get(13) != Some(&b':') || b.get(16) != Some(&b':')
    {
        return None;
    }
    let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..3 {
            millis *= 10;
        }
    }
    let offset_min: i64 = match b.get(i) {
        None => 0,
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let m = i64::from(oh * 60 + om);
            if sign == b'+' { m } else { -m }
        }
        _ => return None,
    };
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + sec) - offset_min * 60;
    Some(secs * 1000 + i64::from(millis))
}

/// A column as one of the types the JSON encoder knows.
enum JsonColumn {
    Ts(TimestampMillisecondArray),
    Str(StringArray),
    I64(Int64Array),
    F64(Float64Array),
    Bool(BooleanArray),
}

impl JsonColumn {
    /// Other widths and units are cast to the closest edgeflow type; anything else to text.
    fn new(array: &ArrayRef) -> Result<JsonColumn> {
        use arrow::compute::cast;
        let dt = array.data_type();
        Ok(match dt {
            DataType::Timestamp(TimeUnit::Millisecond, None) => {
                JsonColumn::Ts(array.as_primitive::<TimestampMillisecondType>().clone())
            }
            DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
                let ms = cast(array, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
                JsonColumn::Ts(ms.as_primitive::<TimestampMillisecondType>().clone())
            }
            DataType::Boolean => JsonColumn::Bool(array.as_boolean().clone()),
            DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                let f = cast(array, &DataType::Float64)?;
                JsonColumn::F64(f.as_primitive().clone())
            }
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => {
                JsonColumn::I64(cast(array, &DataType::Int64)?.as_primitive().clone())
            }
            _ => {
                let s: ArrayRef = if dt == &DataType::Utf8 {
                    Arc::clone(array)
                } else {
                    cast(array, &DataType::Utf8)?
                };
                JsonColumn::Str(s.as_string::<i32>().clone())
            }
        })
    }

    fn is_null(&self, row: usize) -> bool {
        match self {
            JsonColumn::Ts(a) => a.is_null(row),
            JsonColumn::Str(a) => a.is_null(row),
            JsonColumn::I64(a) => a.is_null(row),
            JsonColumn::F64(a) => a.is_null(row),
            JsonColumn::Bool(a) => a.is_null(row),
        }
    }

    fn push(&self, row: usize, out: &mut Vec<u8>) -> Result<()> {
        if self.is_null(row) {
            out.extend_from_slice(b"null");
            return Ok(());
        }
        match self {
            JsonColumn::Ts(a) => {
                out.push(b'"');
                push_rfc3339_ms(out, a.value(row));
                out.push(b'"');
            }
            JsonColumn::Str(a) => serde_json::to_writer(&mut *out, a.value(row))?,
            JsonColumn::I64(a) => serde_json::to_writer(&mut *out, &a.value(row))?,
            // NaN and infinities have no JSON form and become null.
            JsonColumn::F64(a) => serde_json::to_writer(&mut *out, &a.value(row))?,
            JsonColumn::Bool(a) => {
                out.extend_from_slice(if a.value(row) { b"true" } else { b"false" })
            }
        }
        Ok(())
    }
}

/// Appends one JSON object per row of `batch`, each followed by `\n`. Nulls are written as
/// `null`, timestamps as RFC 3339 strings, other Arrow types as their closest JSON form.
pub(crate) fn push_json_lines(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
    let schema = batch.schema();
    let mut keys = Vec::with_capacity(schema.fields().len());
    for (i, f) in schema.fields().iter().enumerate() {
        let mut key = Vec::new();
        if i > 0 {
            key.push(b',');
        }
        serde_json::to_writer(&mut key, f.name())?;
        key.push(b':');
        keys.push(key);
    }
    let columns = batch
        .columns()
        .iter()
        .map(JsonColumn::new)
        .collect::<Result<Vec<_>>>()?;
    for row in 0..batch.num_rows() {
        out.push(b'{');
        for (key, col) in keys.iter().zip(&columns) {
            out.extend_from_slice(key);
            col.push(row, out)?;
        }
        out.extend_from_slice(b"}\n");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_rfc3339_millis_and_parse_back() {
        assert_eq!(rfc3339_ms(1_767_225_601_000), "2026-01-01T00:00:01.000Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(951_782_400_250), "2000-02-29T00:00:00.250Z");
        for ms in [0, -1, 1_767_225_601_000, 951_782_400_250, 4_102_444_799_999] {
            assert_eq!(parse_timestamp_ms(&rfc3339_ms(ms)), Some(ms), "{ms}");
        }
        assert_eq!(
            parse_timestamp_ms("2026-01-01T00:00:00.250+01:00"),
            Some(1_767_225_600_000 - 3_600_000 + 250)
        );
        assert_eq!(parse_timestamp_ms("1767225600000"), Some(1_767_225_600_000));
        assert_eq!(
            parse_timestamp_ms("2026-01-01T01:00:00.25+01:00"),
            Some(1_767_225_600_250)
        );
        assert_eq!(
            parse_timestamp_ms("2026-01-01 00:00:00.123456z"),
            Some(1_767_225_600_123)
        );
        assert_eq!(parse_timestamp_ms("2026-01-01"), Some(1_767_225_600_000));
        assert_eq!(
            parse_timestamp_ms("1969-12-31T23:59:59.999-00:00"),
            Some(-1)
        );
        for bad in [
            "2026-02-30T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00Z",
            "2026-01-01T00:00:00.Z",
        ] {
            assert_eq!(parse_timestamp_ms(bad), None, "{bad}");
        }
        assert_eq!(parse_timestamp_ms("yesterday"), None);
        assert_eq!(parse_timestamp_ms(""), None);
    }

    proptest::proptest! {
        #[test]
        fn every_millisecond_in_years_0_to_9999_round_trips(
            ms in -62_167_219_200_000i64..253_402_300_800_000
        ) {
            proptest::prop_assert_eq!(parse_timestamp_ms(&rfc3339_ms(ms)), Some(ms));
        }
    }

    #[test]
    fn civil_dates_match_a_day_by_day_walk() {
        // Oracle: walk forward one day at a time from 1970-01-01 with the Gregorian rules.
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        for days in 0..200_000i64 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            assert_eq!(days_from_civil(y, m, d), days);
            let len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }
}
