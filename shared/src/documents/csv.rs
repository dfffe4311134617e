//! CSV, a row at a time: the first row is the header, each row after it a section
//! ([`TableMapping`](super::TableMapping) says which columns are text, id and metadata).
//! Rows may have more or fewer fields than the header; quoted fields may span lines, and a row
//! is cited by the line it starts on.

use std::io::BufRead;

use super::table::Header;
use super::text::{CrlfToLf, shift_jis_hint, utf8_reader};
use super::{ExtractError, ExtractSettings, Section, io_error};

pub(super) struct CsvSections {
    reader: csv::Reader<Box<dyn BufRead + Send>>,
    header: Header,
    record: csv::ByteRecord,
    max_section_bytes: usize,
    ended: bool,
}

impl CsvSections {
    pub(super) fn new(
        body: impl BufRead + Send + 'static,
        settings: &ExtractSettings,
    ) -> Result<Self, ExtractError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(
                Box::new(std::io::BufReader::new(CrlfToLf::new(utf8_reader(body)?)))
                    as Box<dyn BufRead + Send>,
            );
        let mut first = csv::ByteRecord::new();
        let found = reader.read_byte_record(&mut first).map_err(csv_error)?;
        if !found {
            return Err(ExtractError::NoText {
                reason: "the CSV is empty".into(),
            });
        }
        let header = Header::new(cells(&first, 1)?, &settings.table)?;
        Ok(CsvSections {
            reader,
            header,
            record: csv::ByteRecord::new(),
            max_section_bytes: settings.max_section_bytes,
            ended: false,
        })
    }

    fn row(&mut self) -> Result<Option<Section>, ExtractError> {
        loop {
            if !self
                .reader
                .read_byte_record(&mut self.record)
                .map_err(csv_error)?
            {
                self.ended = true;
                return Ok(None);
            }
            let line = self.record.position().map_or(0, |p| p.line());
            if self.record.as_slice().len() > self.max_section_bytes {
                return Err(ExtractError::Row {
                    line,
                    reason: format!(
                        "the row is larger than the {}-byte limit",
                        self.max_section_bytes
                    ),
                });
            }
            let cells = cells(&self.record, line)?;
            if let Some(section) = self.header.row(&cells, None, line)? {
                return Ok(Some(section));
            }
        }
    }
}

fn cells(record: &csv::ByteRecord, line: u64) -> Result<Vec<String>, ExtractError> {
    record
        .iter()
        .map(|field| {
            // A quoted field's line breaks are kept, as `\n`.
            std::str::from_utf8(field)
                .map(|f| f.replace("\r\n", "\n"))
                .map_err(|_| ExtractError::NotUtf8 {
                    line,
                    hint: shift_jis_hint(record.as_slice()),
                })
        })
        .collect()
}

fn csv_error(e: csv::Error) -> ExtractError {
    let line = e.position().map_or(0, |p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(io) => io_error(io),
        other => ExtractError::Row {
            line,
            reason: format!("{other:?}"),
        },
    }
}

impl Iterator for CsvSections {
    type Item = Result<Section, ExtractError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        match self.row() {
            Ok(Some(section)) => Some(Ok(section)),
            Ok(None) => None,
            Err(e @ ExtractError::Row { .. }) => Some(Err(e)),
            // Text that is not UTF-8 is so throughout, as a rule: one error, not one a row.
            Err(e) => {
                self.ended = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::documents::{Citation, TableMapping};

    fn rows(bytes: &[u8], settings: &ExtractSettings) -> Vec<Result<Section, ExtractError>> {
        CsvSections::new(Cursor::new(bytes.to_vec()), settings)
            .unwrap()
            .collect()
    }

    #[test]
    fn a_price_list_row_by_row() {
        let csv = include_bytes!("../../../dev/samples/documents/prices.csv");
        let got: Vec<Section> = rows(csv, &ExtractSettings::default())
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[0].text,
            "品番: A-001\n品名: ボールペン\n価格: 120\n説明: 黒インク"
        );
        assert_eq!(
            got[0].citation,
            Citation::Row {
                sheet: None,
                row: 2,
                columns: vec!["品番".into(), "品名".into(), "価格".into(), "説明".into()],
            }
        );
        assert_eq!(got[1].text.lines().last(), Some("説明: A5サイズ, 方眼"));
        // A quoted field across lines: the row is cited by its first line, the next row by its
        // own.
        assert!(
            got[2].text.ends_with("説明: 75mm角\n4色パック"),
            "{}",
            got[2].text
        );
        assert!(matches!(got[2].citation, Citation::Row { row: 4, .. }));
        assert!(matches!(got[3].citation, Citation::Row { row: 6, .. }));
        assert_eq!(got[3].text, "品番: A-004\n品名: 消しゴム");
    }

    #[test]
    fn mapped_like_records() {
        let settings = ExtractSettings {
            table: TableMapping {
                text_columns: vec!["説明".into()],
                id_column: Some("品番".into()),
            },
            ..ExtractSettings::default()
        };
        let csv = include_bytes!("../../../dev/samples/documents/prices.csv");
        let got = rows(csv, &settings);
        let first = got[0].as_ref().unwrap();
        assert_eq!(first.text, "黒インク");
        assert_eq!(first.id.as_deref(), Some("A-001"));
        assert_eq!(
            serde_json::Value::Object(first.metadata.clone()),
            serde_json::json!({"品名": "ボールペン", "価格": "120"})
        );
        // A-004 has no description: that row is refused, naming its line, and only it.
        let e = got[3].as_ref().unwrap_err();
        assert_eq!(e.to_string(), "line 6: no text in column(s) 説明");
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn shift_jis_is_refused_with_a_hint() {
        let csv = include_bytes!("../../../dev/samples/documents/hostile/shift_jis.csv");
        let e = CsvSections::new(Cursor::new(csv.to_vec()), &ExtractSettings::default())
            .err()
            .unwrap();
        assert_eq!(e.kind(), "not_utf8");
        assert_eq!(
            e.to_string(),
            "the text is not UTF-8 (line 1); it reads as Shift_JIS: save it as UTF-8"
        );
    }

    #[test]
    fn utf16_with_a_bom_and_an_oversized_row() {
        let text = "name,note\r\nA,短い\r\nB,長い\r\n";
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let got = rows(&utf16, &ExtractSettings::default());
        assert_eq!(got[1].as_ref().unwrap().text, "name: B\nnote: 長い");
        let settings = ExtractSettings {
            max_section_bytes: 6,
            ..ExtractSettings::default()
        };
        let got = rows(text.as_bytes(), &settings);
        assert_eq!(got.len(), 2, "each oversized row is refused on its own");
        let e = got[0].as_ref().unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2: the row is larger than the 6-byte limit"
        );
    }
}
