//! How list commands print: aligned text with a header for people (the default), or
//! JSON or CSV for scripts (`--format json|csv`), so nobody parses columns of text.
//! JSON is the command's typed result as serde writes it; CSV is one row per item with
//! a header row, the same columns as the text.

use std::io::Write;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// `--format` of the list commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum ListFormat {
    /// Aligned columns with a header row.
    #[default]
    Text,
    /// The whole result as one JSON document.
    Json,
    /// A header row, then one row per item.
    Csv,
}

/// Rows of a listing: the header and the cells of each item, as text.
pub struct Table {
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Columns padded to their widest cell (the last one is not padded).
    pub fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>, out: &mut dyn Write| -> std::io::Result<()> {
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    text.push_str(cell);
                } else {
                    let pad = widths[i].saturating_sub(cell.chars().count());
                    text.push_str(cell);
                    text.push_str(&" ".repeat(pad + 2));
                }
            }
            writeln!(out, "{}", text.trim_end())
        };
        line(self.header.clone(), out)?;
        for row in &self.rows {
            line(row.iter().map(String::as_str).collect(), out)?;
        }
        Ok(())
    }

    pub fn write_csv(&self, out: &mut dyn Write) -> anyhow::Result<()> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(&self.header)?;
        for row in &self.rows {
            writer.write_record(row)?;
        }
        out.write_all(&writer.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?)?;
        Ok(())
    }
}

/// Writes a listing in `format`: `value` for JSON, `table` (built only when needed) for
/// text and CSV.
pub fn write_listing<T: Serialize>(
    format: ListFormat,
    value: &T,
    table: impl FnOnce() -> Table,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match format {
        ListFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, value)?;
            writeln!(out)?;
        }
        ListFormat::Csv => table().write_csv(out)?,
        ListFormat::Text => table().write_text(out)?,
    }
    Ok(())
}

/// "-" for an empty cell, so text columns stay aligned and CSV cells say "none".
pub fn or_dash(text: impl Into<String>) -> String {
    let text = text.into();
    if text.is_empty() {
        "-".into()
    } else {
        text
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn text_is_aligned_and_csv_quotes() {
        let mut t = Table::new(&["ADDRESS", "NAME"]);
        t.push(vec!["anna@example.com".into(), "Anna, Berg".into()]);
        t.push(vec!["b@x.org".into(), "-".into()]);
        let mut text = Vec::new();
        t.write_text(&mut text).unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "ADDRESS           NAME\nanna@example.com  Anna, Berg\nb@x.org           -\n"
        );
        let mut csv = Vec::new();
        t.write_csv(&mut csv).unwrap();
        assert_eq!(
            String::from_utf8(csv).unwrap(),
            "ADDRESS,NAME\nanna@example.com,\"Anna, Berg\"\nb@x.org,-\n"
        );
    }
}
