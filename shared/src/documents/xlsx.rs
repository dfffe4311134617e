//! Excel (.xlsx), a section per row of each sheet: the first non-empty row of a sheet is its
//! header, the rows after it are mapped like CSV rows ([`TableMapping`](super::TableMapping))
//! and cited by sheet name and Excel's row number. Cells are streamed (calamine's cell reader),
//! so a sheet is never held whole; dates read as ISO dates, numbers without a trailing `.0`.

use std::io::Cursor;

use calamine::{DataRef, DataType, Reader, Xlsx};

use super::archive::Archive;
use super::table::Header;
use super::{ExtractError, ExtractSettings, Format, Section, contain};

/// The rows of every sheet as sections. Long because calamine's reading is wrapped whole in
/// [`contain`] (its panics become errors), with the zip budget checked before it starts.
pub(super) fn extract(
    bytes: &[u8],
    settings: &ExtractSettings,
) -> Result<Vec<Section>, ExtractError> {
    contain(Format::Xlsx, || {
        // calamine reads the zip itself: the parts it may read are inflated once here first,
        // within the budget, so a bomb stops before calamine starts.
        Archive::open(bytes, Format::Xlsx, settings)?
            .inflate_all(|name| name.ends_with(".xml") || name.ends_with(".rels"))?;
        let mut workbook: Xlsx<_> = Xlsx::new(Cursor::new(bytes)).map_err(corrupt)?;
        let mut sections = Vec::new();
        let mut text_bytes = 0usize;
        for sheet in workbook.sheet_names() {
            let mut cells = workbook.worksheet_cells_reader(&sheet).map_err(corrupt)?;
            let mut header: Option<Header> = None;
            let mut row_cells: Vec<String> = Vec::new();
            let mut row_index: Option<u32> = None;
            let mut flush = |row: u32, cells: &mut Vec<String>, header: &mut Option<Header>| {
                let row_cells = std::mem::take(cells);
                match header {
                    None => {
                        if row_cells.iter().any(|c| !c.trim().is_empty()) {
                            *header = Some(Header::new(row_cells, &settings.table)?);
                        }
                        Ok(())
                    }
                    Some(h) => match h.row(&row_cells, Some(&sheet), u64::from(row) + 1) {
                        Ok(Some(section)) => {
                            text_bytes += section.text.len();
                            if text_bytes > settings.max_text_bytes {
                                return Err(ExtractError::TooMuchText {
                                    limit: settings.max_text_bytes,
                                });
                            }
                            sections.push(section);
                            Ok(())
                        }
                        Ok(None) => Ok(()),
                        // A row without text is skipped, as a CSV row is; its neighbours go on.
                        Err(ExtractError::Row { .. }) => Ok(()),
                        Err(e) => Err(e),
                    },
                }
            };
            while let Some(cell) = cells.next_cell().map_err(corrupt)? {
                let (row, column) = cell.get_position();
                if row_index.is_some_and(|r| r != row) {
                    flush(row_index.unwrap_or_default(), &mut row_cells, &mut header)?;
                }
                row_index = Some(row);
                let column = column as usize;
                if column >= row_cells.len() {
                    if column > 16_384 {
                        // Excel's last column is XFD (16,384): past it the sheet is not Excel's.
                        return Err(corrupt(format!("a cell in column {}", column + 1)));
                    }
                    row_cells.resize(column + 1, String::new());
                }
                row_cells[column] = cell_text(cell.get_value());
            }
            if let Some(row) = row_index {
                flush(row, &mut row_cells, &mut header)?;
            }
        }
        Ok(sections)
    })
}

fn corrupt(e: impl std::fmt::Display) -> ExtractError {
    ExtractError::Corrupt {
        format: Format::Xlsx,
        reason: e.to_string(),
    }
}

/// A cell as a person reads it in Excel (without its number format's decoration).
fn cell_text(value: &DataRef<'_>) -> String {
    match value {
        DataRef::Empty => String::new(),
        DataRef::String(s) | DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => s.clone(),
        DataRef::SharedString(s) => s.to_string(),
        DataRef::Int(i) => i.to_string(),
        DataRef::Float(f) => number(*f),
        DataRef::Bool(b) => if *b { "TRUE" } else { "FALSE" }.into(),
        DataRef::DateTime(_) => match value.as_datetime() {
            Some(dt) if dt.time() == chrono::NaiveTime::MIN => dt.format("%Y-%m-%d").to_string(),
            Some(dt) => dt.format("%Y-%m-%d %H:%M:%S").to_string(),
            None => String::new(),
        },
        DataRef::Error(e) => format!("#{e:?}"),
    }
}

fn number(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::{Citation, TableMapping};

    const WORKBOOK: &[u8] = include_bytes!("../../../dev/samples/documents/workbook.xlsx");

    #[test]
    fn two_sheets_row_by_row() {
        let got = extract(WORKBOOK, &ExtractSettings::default()).unwrap();
        let rows: Vec<(String, u64, &str)> = got
            .iter()
            .map(|s| match &s.citation {
                Citation::Row {
                    sheet: Some(sheet),
                    row,
                    ..
                } => (sheet.clone(), *row, s.text.as_str()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                ("商品".into(), 2, "品番: A-001\n品名: ボールペン\n価格: 120"),
                ("商品".into(), 3, "品番: A-002\n品名: ノート\n価格: 250.5"),
                ("在庫".into(), 3, "倉庫: 東京\n数量: 40\n入荷日: 2024-04-01"),
                // The empty cell is left out, and the row number is Excel's.
                ("在庫".into(), 5, "倉庫: 大阪\n入荷日: 2024-04-02"),
            ]
        );
        assert_eq!(
            got[3].citation,
            Citation::Row {
                sheet: Some("在庫".into()),
                row: 5,
                columns: vec!["倉庫".into(), "入荷日".into()],
            }
        );
    }

    #[test]
    fn mapped_columns() {
        let settings = ExtractSettings {
            table: TableMapping {
                text_columns: vec!["品名".into()],
                id_column: Some("品番".into()),
            },
            ..ExtractSettings::default()
        };
        // The second sheet has no such columns: the mapping is per workbook, so it fails.
        let e = extract(WORKBOOK, &settings).unwrap_err();
        assert!(e.to_string().contains("no column \"品名\""), "{e}");
    }

    #[test]
    fn numbers_read_as_written() {
        assert_eq!(number(120.0), "120");
        assert_eq!(number(250.5), "250.5");
        assert_eq!(number(-3.0), "-3");
        assert_eq!(number(1e20), "100000000000000000000");
    }
}
