//! batonctl's one printer. Every command answers with a view: a struct that
//! derives `Serialize` and knows its text form ([`View`]). `--json` prints
//! the view's JSON, otherwise its text; no command formats JSON of its own.
//!
//! The JSON goes through `serde_json::Value`, whose maps keep keys sorted
//! (serde_json without `preserve_order`): batonctl's JSON has always listed
//! keys alphabetically, and scripts may compare it as text, so a view's
//! field order does not matter.

use std::fmt;

use baton_client::proto::PartitionRange;
use serde::ser::{Serialize, SerializeSeq, Serializer};
use serde_json::Value;

/// A command's answer: its JSON is its `Serialize`; `text` is what is
/// printed without `--json`, every line ending in a newline.
pub trait View: Serialize {
    fn text(&self) -> String;
}

/// [`View`] in a form a command can return boxed, whatever its type.
pub trait Reply {
    fn to_json(&self) -> Result<Value, serde_json::Error>;
    fn to_text(&self) -> String;
}

impl<V: View> Reply for V {
    fn to_json(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }

    fn to_text(&self) -> String {
        self.text()
    }
}

/// Boxes a view as a command's answer.
pub fn reply(view: impl View + 'static) -> Box<dyn Reply> {
    Box::new(view)
}

/// How answers are printed: `--json` or text.
#[derive(Clone, Copy)]
pub struct Format {
    pub json: bool,
}

impl Format {
    /// One answer: pretty JSON, or its text.
    pub fn print(self, reply: &dyn Reply) {
        if self.json {
            let text = reply
                .to_json()
                .and_then(|v| serde_json::to_string_pretty(&v))
                .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
            println!("{text}");
        } else {
            print!("{}", reply.to_text());
        }
    }

    /// One item of a stream (`watch`): compact JSON on one line, or its
    /// text, which is one line.
    pub fn print_line(self, reply: &dyn Reply) {
        if self.json {
            match reply.to_json() {
                Ok(v) => println!("{v}"),
                Err(e) => println!("{{\"error\": \"{e}\"}}"),
            }
        } else {
            print!("{}", reply.to_text());
        }
    }
}

/// A table: a header and rows, columns padded to their widest cell and
/// separated by two spaces, trailing blanks trimmed.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let columns = self.rows.first().map_or(0, Vec::len);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r.get(c).map_or(0, String::len))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &self.rows {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            writeln!(f, "{}", line.join("  ").trim_end())?;
        }
        Ok(())
    }
}

/// Partition ranges: `[[start, end], ...]` in JSON, `0-119, 240` in text
/// (`-` for none).
#[derive(Clone, Debug, Default)]
pub struct Ranges(pub Vec<PartitionRange>);

impl Serialize for Ranges {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for r in &self.0 {
            seq.serialize_element(&[r.first, r.last])?;
        }
        seq.end()
    }
}

impl fmt::Display for Ranges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        let text: Vec<String> = self
            .0
            .iter()
            .map(|r| {
                if r.first == r.last {
                    r.first.to_string()
                } else {
                    format!("{}-{}", r.first, r.last)
                }
            })
            .collect();
        f.write_str(&text.join(", "))
    }
}

/// `Some(text)` unless empty: the servers send "" for "none", JSON says null.
pub fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_and_trim_line_ends() {
        let mut t = Table::new(&["ID", "ADDRESS", "ROLE"]);
        t.row(vec!["1".into(), "127.0.0.1:7401".into(), "voter".into()]);
        t.row(vec!["22".into(), "h:1".into(), String::new()]);
        assert_eq!(
            t.to_string(),
            "ID  ADDRESS         ROLE\n1   127.0.0.1:7401  voter\n22  h:1\n"
        );
    }

    #[test]
    fn ranges_print_as_pairs_and_as_text() {
        let r = |first, last| PartitionRange { first, last };
        let ranges = Ranges(vec![r(0, 119), r(240, 240)]);
        assert_eq!(ranges.to_string(), "0-119, 240");
        assert_eq!(
            serde_json::to_string(&ranges).ok().as_deref(),
            Some("[[0,119],[240,240]]")
        );
        assert_eq!(Ranges::default().to_string(), "-");
    }
}

/// The word batonctl prints for a value of a protocol enum: its proto name
/// without the enum's prefix, in lower case (`WORKER_STATE_DRAINING` with
/// prefix `WORKER_STATE_` is `draining`), as batonctl printed before the
/// protocol had enums.
pub fn word(proto_name: &str, prefix: &str) -> String {
    proto_name
        .strip_prefix(prefix)
        .unwrap_or(proto_name)
        .to_ascii_lowercase()
}

#[cfg(test)]
mod word_tests {
    use super::word;
    use baton_client::proto as pb;

    #[test]
    fn an_enum_prints_as_the_word_batonctl_always_printed() {
        let state = pb::WorkerState::Draining.as_str_name();
        assert_eq!(word(state, "WORKER_STATE_"), "draining");
        let reason = pb::LeaveReason::Expired.as_str_name();
        assert_eq!(word(reason, "LEAVE_REASON_"), "expired");
    }
}
