//! Table rows (CSV, Excel) as sections, mapped the way JSON records are: chosen columns are
//! the text, one column the id, the other columns metadata.

use serde_json::{Map, Value};

use super::{Citation, ExtractError, Section};

/// How a table row becomes a section: the table's counterpart of `TEXT_FIELDS` / `ID_FIELD`.
/// Columns are named by their header (the first row of a CSV file, the first non-empty row of
/// a sheet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableMapping {
    /// The columns whose values are the row's text, in this order. Empty (the default): every
    /// column, each on its own line as `header: value`, and no metadata; a table nobody
    /// described still reads well. One column: its value alone. Several: `header: value`
    /// lines. A row whose text columns are all empty is an [`ExtractError::Row`].
    pub text_columns: Vec<String>,
    /// The column holding the row's id; `None` or an empty cell: no id (the caller derives
    /// one from the object and the row).
    pub id_column: Option<String>,
}

/// A table's header, resolved against the mapping once.
#[derive(Debug, Clone)]
pub(super) struct Header {
    names: Vec<String>,
    text: Vec<usize>,
    id: Option<usize>,
}

impl Header {
    /// Names each column (an empty or repeated header becomes `column N`, 1-based) and finds
    /// the mapping's columns; a column the mapping names but the header lacks is an error.
    pub(super) fn new(cells: Vec<String>, mapping: &TableMapping) -> Result<Self, ExtractError> {
        let mut names: Vec<String> = Vec::with_capacity(cells.len());
        for (i, cell) in cells.into_iter().enumerate() {
            let cell = cell.trim().to_string();
            let name = if cell.is_empty() || names.contains(&cell) {
                format!("column {}", i + 1)
            } else {
                cell
            };
            names.push(name);
        }
        let find = |wanted: &String| {
            names.iter().position(|n| n == wanted).ok_or_else(|| {
                let list = names.join(", ");
                ExtractError::NoText {
                    reason: format!("the header has no column {wanted:?} (it has {list})"),
                }
            })
        };
        let text = mapping
            .text_columns
            .iter()
            .map(find)
            .collect::<Result<Vec<_>, _>>()?;
        let id = mapping.id_column.as_ref().map(find).transpose()?;
        Ok(Header { names, text, id })
    }

    fn name(&self, i: usize) -> String {
        self.names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("column {}", i + 1))
    }

    /// One row as a section; `Ok(None)` for a row with no values at all. Long because the
    /// row's text, its metadata (the columns that are not text) and its id come from one
    /// reading of the mapping.
    pub(super) fn row(
        &self,
        cells: &[String],
        sheet: Option<&str>,
        row: u64,
    ) -> Result<Option<Section>, ExtractError> {
        if cells.iter().all(|c| c.trim().is_empty()) {
            return Ok(None);
        }
        let value = |i: usize| cells.get(i).map(|c| c.trim()).filter(|c| !c.is_empty());
        let text_columns: Vec<usize> = if self.text.is_empty() {
            (0..cells.len().max(self.names.len())).collect()
        } else {
            self.text.clone()
        };
        let mut lines = Vec::new();
        let mut columns = Vec::new();
        for &i in &text_columns {
            if Some(i) == self.id && self.text.is_empty() {
                continue;
            }
            if let Some(v) = value(i) {
                let name = self.name(i);
                lines.push(if self.text.len() == 1 {
                    v.to_string()
                } else {
                    format!("{name}: {v}")
                });
                columns.push(name);
            }
        }
        if lines.is_empty() {
            let wanted: Vec<String> = text_columns.iter().map(|&i| self.name(i)).collect();
            return Err(ExtractError::Row {
                line: row,
                reason: format!("no text in column(s) {}", wanted.join(", ")),
            });
        }
        let mut metadata = Map::new();
        if !self.text.is_empty() {
            for (i, cell) in cells.iter().enumerate() {
                if self.text.contains(&i) || Some(i) == self.id {
                    continue;
                }
                if let Some(v) = value(i) {
                    metadata.insert(self.name(i), Value::String(v.to_string()));
                }
                let _ = cell;
            }
        }
        Ok(Some(Section {
            text: lines.join("\n"),
            citation: Citation::Row {
                sheet: sheet.map(str::to_string),
                row,
                columns,
            },
            id: self.id.and_then(value).map(str::to_string),
            metadata,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn every_column_as_lines_by_default() {
        let header = Header::new(strings(&["品番", "", "品番"]), &TableMapping::default()).unwrap();
        let s = header
            .row(&strings(&["A-1", "x", " y ", "extra"]), None, 2)
            .unwrap()
            .unwrap();
        assert_eq!(
            s.text,
            "品番: A-1\ncolumn 2: x\ncolumn 3: y\ncolumn 4: extra"
        );
        assert!(s.metadata.is_empty());
        assert_eq!(s.id, None);
        assert!(header.row(&strings(&["", " "]), None, 3).unwrap().is_none());
    }

    #[test]
    fn mapped_columns_text_id_and_metadata() {
        let mapping = TableMapping {
            text_columns: vec!["説明".into()],
            id_column: Some("品番".into()),
        };
        let header = Header::new(strings(&["品番", "品名", "説明"]), &mapping).unwrap();
        let s = header
            .row(&strings(&["A-1", "ペン", "黒インク"]), Some("商品"), 2)
            .unwrap()
            .unwrap();
        assert_eq!(s.text, "黒インク");
        assert_eq!(s.id.as_deref(), Some("A-1"));
        assert_eq!(
            Value::Object(s.metadata),
            serde_json::json!({"品名": "ペン"})
        );
        let e = header
            .row(&strings(&["A-2", "ペン", ""]), None, 3)
            .unwrap_err();
        assert_eq!(e.to_string(), "line 3: no text in column(s) 説明");

        let wrong = TableMapping {
            text_columns: vec!["body".into()],
            id_column: None,
        };
        let e = Header::new(strings(&["品番", "品名"]), &wrong).unwrap_err();
        assert!(
            e.to_string()
                .contains("no column \"body\" (it has 品番, 品名)"),
            "{e}"
        );
    }
}
