//! Bounded reading of text records: lines of at most a set length, and CSV records (which may
//! span lines inside a quoted field) assembled from them, resynchronizing at the next line
//! after a quoting error.
//!
//! Two bounds keep one bad record from costing more than itself:
//! - a line longer than the bound ([`DEFAULT_MAX_LINE_BYTES`], 1 MiB, by default) is never
//!   buffered: the reader keeps its first [`SAMPLE_BYTES`] bytes as a sample, skips to the next
//!   newline and reports the line as too long;
//! - a CSV quoted field may span lines, but the record it belongs to must close within the
//!   same bound and have the expected number of fields. Otherwise the quote that opened it is a
//!   quoting error: the record's first line alone is rejected and reading resumes at the line
//!   after it, so the lines the open quote would have swallowed are read as records again.
//!
//! CSV follows RFC 4180 as the `csv` crate reads it: `,` separates fields, a field that starts
//! with `"` is quoted (`""` inside it is one `"`; text after its closing quote is appended), a
//! record ends at `\n` or `\r\n` outside quotes, and empty lines are skipped.

use std::collections::VecDeque;
use std::io::{self, BufRead};

/// The default bound on a line (and on a CSV record spanning lines), in bytes: 1 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// Bytes of an over-long line kept as its sample in a dead letter.
pub const SAMPLE_BYTES: usize = 256;

/// One line as read: its bytes with the terminator, or a sample of it when it was too long.
#[derive(Debug)]
pub(crate) struct Line {
    /// Line number, from 1.
    pub number: u64,
    /// The line with its `\n` (none at the end of the input), or the first
    /// [`SAMPLE_BYTES`] bytes when `too_long` is set.
    pub bytes: Vec<u8>,
    /// `Some(length)` when the line was longer than the bound: its length without the `\n`.
    pub too_long: Option<u64>,
}

/// Reads lines of at most `max` bytes (without the terminator) from a buffered reader.
pub(crate) struct LineReader<R> {
    inner: R,
    max: usize,
    line_no: u64,
}

impl<R: BufRead> LineReader<R> {
    /// A reader of lines of at most `max` bytes.
    pub fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            max,
            line_no: 0,
        }
    }

    /// Changes the bound for the lines that follow.
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// The bound in effect, bytes.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The next line, `None` at the end of the input. An over-long line is consumed up to
    /// and including its newline while holding only a sample of it.
    pub fn next_line(&mut self) -> io::Result<Option<Line>> {
        // Enough for a line of `max` bytes plus `\r\n`, and for a sample.
        let limit = self.max.saturating_add(2).max(SAMPLE_BYTES);
        let mut bytes = Vec::new();
        let mut length: u64 = 0;
        let mut ended = false;
        while !ended {
            let available = match self.inner.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                break;
            }
            let n = match available.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    ended = true;
                    i + 1
                }
                None => available.len(),
            };
            length += n as u64;
            let room = limit - bytes.len();
            bytes.extend_from_slice(&available[..n.min(room)]);
            self.inner.consume(n);
        }
        if length == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        // A line not held whole is longer than `limit >= max + 2` bytes.
        let too_long = length > bytes.len() as u64 || trim_eol(&bytes).len() > self.max;
        if too_long {
            bytes.truncate(SAMPLE_BYTES);
        }
        Ok(Some(Line {
            number: self.line_no,
            bytes,
            too_long: too_long.then_some(length - u64::from(ended)),
        }))
    }
}

/// Strips a trailing `\n` or `\r\n`.
pub(crate) fn trim_eol(raw: &[u8]) -> &[u8] {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    raw.strip_suffix(b"\r").unwrap_or(raw)
}

/// The dead-letter reason of an over-long line.
pub(crate) fn too_long_reason(length: u64, max: usize) -> String {
    format!(
        "line is longer than the {max}-byte bound ({length} bytes); skipped to the next line, \
         the record shows its first {SAMPLE_BYTES} bytes"
    )
}

/// The sample of an over-long line as dead-letter text.
pub(crate) fn sample_text(sample: &[u8]) -> String {
    format!("{}...", String::from_utf8_lossy(sample))
}

/// Where a CSV parser is inside a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CsvState {
    /// At the start of a field.
    FieldStart,
    /// Inside a field that did not start with a quote.
    Unquoted,
    /// Inside a quoted field.
    Quoted,
    /// On a quote inside a quoted field: the closing quote, or the first of `""`.
    QuoteInQuoted,
}

/// What a byte does to the field being built.
enum CsvAction {
    /// The byte is field text.
    Keep,
    /// The byte is syntax (a quote).
    Skip,
    /// The byte (a comma) ends the field.
    EndField,
}

/// One step of the CSV state machine (the `csv` crate's reading of RFC 4180).
fn csv_step(state: CsvState, byte: u8) -> (CsvState, CsvAction) {
    use CsvState::*;
    match (state, byte) {
        (FieldStart, b'"') => (Quoted, CsvAction::Skip),
        (FieldStart | Unquoted | QuoteInQuoted, b',') => (FieldStart, CsvAction::EndField),
        (FieldStart | Unquoted, _) => (Unquoted, CsvAction::Keep),
        (Quoted, b'"') => (QuoteInQuoted, CsvAction::Skip),
        (Quoted, _) => (Quoted, CsvAction::Keep),
        (QuoteInQuoted, b'"') => (Quoted, CsvAction::Keep),
        (QuoteInQuoted, _) => (Unquoted, CsvAction::Keep),
    }
}

/// The state after `bytes`, from `state`.
fn csv_scan(state: CsvState, bytes: &[u8]) -> CsvState {
    bytes.iter().fold(state, |s, b| csv_step(s, *b).0)
}

/// Splits one complete CSV record (without its terminator) into `record`'s fields.
fn csv_split(text: &[u8], record: &mut csv::ByteRecord, field: &mut Vec<u8>) {
    record.clear();
    field.clear();
    let mut state = CsvState::FieldStart;
    for &byte in text {
        let (next, action) = csv_step(state, byte);
        match action {
            CsvAction::Keep => field.push(byte),
            CsvAction::Skip => {}
            CsvAction::EndField => {
                record.push_field(field);
                field.clear();
            }
        }
        state = next;
    }
    record.push_field(field);
}

/// What [`CsvRecords::next_record`] read.
#[derive(Debug)]
pub(crate) enum CsvRead {
    /// A record, now in the caller's `ByteRecord`.
    Record {
        /// Line of its first character, from 1.
        line: u64,
        /// Its text without the final terminator.
        raw: Vec<u8>,
    },
    /// A line that is not a record: too long, or holding a quote that never closes into a
    /// record of the expected width.
    Rejected {
        /// Its line number, from 1.
        line: u64,
        /// Why.
        reason: String,
        /// Its text (a sample when too long).
        raw: String,
    },
}

/// CSV records read line by line with bounded memory; see the module docs.
pub(crate) struct CsvRecords<R> {
    lines: LineReader<R>,
    /// Lines read ahead looking for a quoted field's end, to be read again after a quoting
    /// error (oldest first).
    pending: VecDeque<Line>,
    field: Vec<u8>,
}

impl<R: BufRead> CsvRecords<R> {
    /// CSV records of `inner`, lines (and records) of at most `max` bytes.
    pub fn new(inner: R, max: usize) -> Self {
        CsvRecords {
            lines: LineReader::new(inner, max),
            pending: VecDeque::new(),
            field: Vec::new(),
        }
    }

    /// Changes the line and record bound for what follows.
    pub fn set_max(&mut self, max: usize) {
        self.lines.set_max(max);
    }

    fn take_line(&mut self) -> io::Result<Option<Line>> {
        match self.pending.pop_front() {
            Some(line) => Ok(Some(line)),
            None => self.lines.next_line(),
        }
    }

    /// The next record into `record`, or a rejected line; `None` at the end of the input.
    /// A record spanning lines is accepted when it has `width` fields (any number when
    /// `width` is `None`, for a header).
    pub fn next_record(
        &mut self,
        width: Option<usize>,
        record: &mut csv::ByteRecord,
    ) -> io::Result<Option<CsvRead>> {
        let max = self.lines.max();
        let first = loop {
            let Some(line) = self.take_line()? else {
                return Ok(None);
            };
            if let Some(length) = line.too_long {
                return Ok(Some(CsvRead::Rejected {
                    line: line.number,
                    reason: too_long_reason(length, max),
                    raw: sample_text(&line.bytes),
                }));
            }
            if !trim_eol(&line.bytes).is_empty() {
                break line;
            }
        };
        let mut state = csv_scan(CsvState::FieldStart, trim_eol(&first.bytes));
        if state != CsvState::Quoted {
            csv_split(trim_eol(&first.bytes), record, &mut self.field);
            return Ok(Some(CsvRead::Record {
                line: first.number,
                raw: trim_eol(&first.bytes).to_vec(),
            }));
        }
        // A quote is open at the end of the line: read ahead until it closes.
        let mut joined = first.bytes.clone();
        let mut ahead: Vec<Line> = Vec::new();
        let failure = loop {
            let Some(line) = self.take_line()? else {
                break "the input ends inside it".to_string();
            };
            if line.too_long.is_some() || joined.len() + line.bytes.len() > max {
                let at = line.number;
                ahead.push(line);
                break format!("it does not close within the {max}-byte bound (line {at})");
            }
            state = csv_scan(state, &line.bytes);
            joined.extend_from_slice(&line.bytes);
            let at = line.number;
            ahead.push(line);
            // After the newline, `Quoted` means the quote is still open.
            if state != CsvState::Quoted {
                let text = trim_eol(&joined);
                csv_split(text, record, &mut self.field);
                match width {
                    Some(width) if record.len() != width => {
                        break format!(
                            "closing it in line {at} makes a record of {} fields, not {width}",
                            record.len()
                        );
                    }
                    _ => {
                        return Ok(Some(CsvRead::Record {
                            line: first.number,
                            raw: text.to_vec(),
                        }));
                    }
                }
            }
        };
        // A quoting error costs this line only: the lines read ahead are read again.
        for line in ahead.into_iter().rev() {
            self.pending.push_front(line);
        }
        record.clear();
        Ok(Some(CsvRead::Rejected {
            line: first.number,
            reason: format!(
                "unterminated quoted field: {failure}; the record is this line only, reading \
                 resumes at the next line"
            ),
            raw: String::from_utf8_lossy(trim_eol(&first.bytes)).into_owned(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[u8], max: usize) -> Vec<(u64, Vec<u8>, Option<u64>)> {
        let mut reader = LineReader::new(io::BufReader::with_capacity(7, text), max);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().unwrap() {
            out.push((line.number, line.bytes, line.too_long));
        }
        out
    }

    #[test]
    fn lines_longer_than_the_bound_keep_only_a_sample_and_the_next_line_is_read() {
        let long = vec![b'x'; 1000];
        let mut text = b"ab\n".to_vec();
        text.extend_from_slice(&long);
        text.extend_from_slice(b"\r\ncd\n1234\n12345");
        let got = lines(&text, 4);
        assert_eq!(got.len(), 5);
        assert_eq!(got[0], (1, b"ab\n".to_vec(), None));
        assert_eq!(got[1].0, 2);
        assert_eq!(got[1].1, vec![b'x'; SAMPLE_BYTES]);
        // Its length counts the `\r` (the reader held no more than a sample of the line).
        assert_eq!(got[1].2, Some(1001));
        assert_eq!(got[2], (3, b"cd\n".to_vec(), None));
        // Exactly the bound is fine; one byte more is not, also without a final newline.
        assert_eq!(got[3], (4, b"1234\n".to_vec(), None));
        assert_eq!(got[4], (5, b"12345".to_vec(), Some(5)));
    }

    /// A record as read: `Ok((line, fields))` or `Err((line, reason))`.
    type ReadRecord = Result<(u64, Vec<String>), (u64, String)>;

    fn records(text: &str, width: Option<usize>, max: usize) -> Vec<ReadRecord> {
        let mut reader = CsvRecords::new(text.as_bytes(), max);
        let mut record = csv::ByteRecord::new();
        let mut out = Vec::new();
        while let Some(read) = reader.next_record(width, &mut record).unwrap() {
            out.push(match read {
                CsvRead::Record { line, .. } => Ok((
                    line,
                    record
                        .iter()
                        .map(|f| String::from_utf8_lossy(f).into_owned())
                        .collect(),
                )),
                CsvRead::Rejected { line, raw, .. } => Err((line, raw)),
            });
        }
        out
    }

    /// What the `csv` crate makes of a text whose quotes are all well formed.
    fn csv_crate(text: &str) -> Vec<Vec<String>> {
        csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_bytes())
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect()
    }

    #[test]
    fn well_formed_records_split_as_the_csv_crate_splits_them() {
        let text = "a,b,c\n\"x, \"\"y\"\"\nz\",,\"q\"r\r\n\n,,\nlast,\"\",end";
        let got: Vec<Vec<String>> = records(text, Some(3), 1024)
            .into_iter()
            .map(|r| r.unwrap().1)
            .collect();
        assert_eq!(got, csv_crate(text));
        assert_eq!(got[1], vec!["x, \"y\"\nz", "", "qr"]);
    }

    #[test]
    fn an_unterminated_quote_costs_its_line_only() {
        // Regression (issue 12, case 9): the open quote swallowed every later line.
        let text = "1,a\n2,\"b\n3,c\n4,d\n";
        assert_eq!(
            records(text, Some(2), 1024),
            vec![
                Ok((1, vec!["1".into(), "a".into()])),
                Err((2, "2,\"b".into())),
                Ok((3, vec!["3".into(), "c".into()])),
                Ok((4, vec!["4".into(), "d".into()])),
            ]
        );
        // A later quote closes it into a record of the wrong width: still one line lost.
        let text = "1,\"a\n2,b\n3,c\"x,y,z\n4,d\n";
        let got = records(text, Some(2), 1024);
        assert_eq!(got[0], Err((1, "1,\"a".into())));
        assert_eq!(got[1], Ok((2, vec!["2".into(), "b".into()])));
        assert_eq!(got.len(), 4, "{got:?}");
        // A quote still open at the bound: the line is rejected, the rest read again.
        let text = format!("1,\"a\n{}", "2,b\n".repeat(10));
        let got = records(&text, Some(2), 16);
        assert_eq!(got[0], Err((1, "1,\"a".into())));
        assert_eq!(got.len(), 11);
        assert!(got[1..].iter().all(Result::is_ok));
    }
}
