//! One output convention for every command that prints data: `-o table` (aligned
//! columns, like `kubectl get`), `-o wide` (the extra columns), `-o json`, `-o yaml`,
//! `-o csv` (every column), and `--no-headers`.

use anyhow::Result;
use serde::Serialize;

/// The format of a command's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// The table with its extra columns.
    Wide,
    /// JSON (the API's objects), for scripts.
    Json,
    /// YAML (the API's objects).
    Yaml,
    /// CSV: a header line, then one line per row, with every column.
    Csv,
}

/// How a command prints: the format and whether tables and CSV start with a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    /// The format.
    pub format: Format,
    /// Print the header line of tables and CSV.
    pub headers: bool,
}

impl Output {
    /// True for the formats a program reads (json, yaml): messages meant for a person
    /// then go to stderr or into the document.
    pub fn is_document(self) -> bool {
        matches!(self.format, Format::Json | Format::Yaml)
    }
}

/// A table: columns shown by default, then the columns only `-o wide` and `-o csv` show.
pub struct Table {
    headers: Vec<&'static str>,
    /// How many of `headers` are shown by default (the rest are wide-only).
    narrow: usize,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these default columns.
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            narrow: headers.len(),
            rows: Vec::new(),
        }
    }

    /// Adds columns that only `-o wide` and `-o csv` show (after the default ones).
    pub fn wide(mut self, headers: &[&'static str]) -> Table {
        self.headers.extend_from_slice(headers);
        self
    }

    /// Adds a row: a cell for every column, default columns first, then the wide ones.
    pub fn add_row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut cells: Vec<String> = cells.into_iter().map(Into::into).collect();
        debug_assert_eq!(cells.len(), self.headers.len(), "{:?}", self.headers);
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// Aligned columns separated by three spaces, no trailing blanks; control
    /// characters (a newline in a message) become spaces so that a row stays a line.
    pub fn render(&self, wide: bool, headers: bool) -> String {
        self.render_within(wide, headers, &mut Vec::new())
    }

    /// [`Table::render`], with columns at least as wide as `widths`, which grow to fit:
    /// the tables printed one after the other (`swell events --follow`) stay aligned.
    pub fn render_within(&self, wide: bool, headers: bool, widths: &mut Vec<usize>) -> String {
        let n = if wide {
            self.headers.len()
        } else {
            self.narrow
        };
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect()
        };
        let mut lines: Vec<Vec<String>> = Vec::new();
        if headers {
            lines.push(self.headers[..n].iter().map(|h| h.to_string()).collect());
        }
        lines.extend(
            self.rows
                .iter()
                .map(|r| r[..n].iter().map(|c| clean(c)).collect()),
        );
        widths.resize(n, 0);
        for line in &lines {
            for (w, cell) in widths.iter_mut().zip(line) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut text = String::new();
        for line in &lines {
            let mut l = String::new();
            for (i, cell) in line.iter().enumerate() {
                l.push_str(cell);
                if i + 1 < n {
                    let pad = widths[i] - cell.chars().count() + 3;
                    l.extend(std::iter::repeat_n(' ', pad));
                }
            }
            text.push_str(l.trim_end());
            text.push('\n');
        }
        text
    }

    /// CSV (RFC 4180 quoting, `\n` line ends) of every column (header line unless `headers` is false).
    pub fn csv(&self, headers: bool) -> String {
        let mut text = String::new();
        let mut line = |cells: &mut dyn Iterator<Item = &str>| {
            let fields: Vec<String> = cells.map(csv_field).collect();
            text.push_str(&fields.join(","));
            text.push('\n');
        };
        if headers {
            line(&mut self.headers.iter().copied());
        }
        for r in &self.rows {
            line(&mut r.iter().map(String::as_str));
        }
        text
    }
}

/// A CSV field: empty for a missing value (a table's `-`), quoted when it holds a
/// comma, a quote or a line break, and led by `'` when a spreadsheet would read it as a
/// formula (as the server's audit export does), numbers excepted.
fn csv_field(s: &str) -> String {
    if s == "-" {
        return String::new();
    }
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) && s.parse::<f64>().is_err() {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The text `value` prints as: JSON or YAML of the value itself, or the table `table`
/// builds (narrow, wide or CSV).
pub fn render<T: Serialize>(
    output: Output,
    value: &T,
    table: impl FnOnce(&T) -> Table,
) -> Result<String> {
    Ok(match output.format {
        Format::Json => format!("{}\n", serde_json::to_string_pretty(value)?),
        Format::Yaml => {
            let text = serde_saphyr::to_string(value)?;
            if text.ends_with('\n') {
                text
            } else {
                format!("{text}\n")
            }
        }
        Format::Table => table(value).render(false, output.headers),
        Format::Wide => table(value).render(true, output.headers),
        Format::Csv => table(value).csv(output.headers),
    })
}

/// Prints `value` on stdout in `output`'s format (see [`render`]).
pub fn print<T: Serialize>(
    output: Output,
    value: &T,
    table: impl FnOnce(&T) -> Table,
) -> Result<()> {
    out!("{}", render(output, value, table)?);
    Ok(())
}

/// Reports a finished action: a line on stderr for people, `{ok, message}` on stdout
/// for json and yaml.
pub fn done(output: Output, message: &str) -> Result<()> {
    if output.is_document() {
        let value = serde_json::json!({ "ok": true, "message": message });
        out!("{}", render(output, &value, |_| Table::new(&[]))?);
    } else {
        eprintln!("{message}");
    }
    Ok(())
}

/// `-` for a missing value, as tables show it.
pub fn or_dash(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(&["NAME", "N"]).wide(&["NOTE"]);
        t.add_row(["web", "2", "a, \"b\""]);
        t.add_row(["database", "10", "line\nbreak"]);
        t.add_row(["=cmd()", "-1", "-"]);
        t
    }

    #[test]
    fn columns_align_without_trailing_blanks() {
        assert_eq!(
            sample().render(false, true),
            "NAME       N\nweb        2\ndatabase   10\n=cmd()     -1\n"
        );
        assert!(sample().render(false, false).starts_with("web        2\n"));
        assert_eq!(
            sample().render(true, true),
            "NAME       N    NOTE\nweb        2    a, \"b\"\ndatabase   10   line break\n=cmd()     -1   -\n"
        );
    }

    #[test]
    fn tables_printed_in_turn_keep_their_columns() {
        let mut widths = Vec::new();
        let mut first = Table::new(&["NAME", "N"]);
        first.add_row(["database", "10"]);
        let mut second = Table::new(&["NAME", "N"]);
        second.add_row(["web", "2"]);
        assert_eq!(
            first.render_within(false, true, &mut widths),
            "NAME       N\ndatabase   10\n"
        );
        assert_eq!(
            second.render_within(false, false, &mut widths),
            "web        2\n"
        );
    }

    #[test]
    fn csv_quotes_what_needs_it_and_has_every_column() {
        assert_eq!(
            sample().csv(true),
            "NAME,N,NOTE\nweb,2,\"a, \"\"b\"\"\"\ndatabase,10,\"line\nbreak\"\n'=cmd(),-1,\n"
        );
        assert!(sample().csv(false).starts_with("web,"));
    }
}
