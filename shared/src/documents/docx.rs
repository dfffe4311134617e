//! Word (.docx), a section per heading like Markdown: paragraphs styled Title or Heading N
//! (found through `styles.xml`, since Japanese Word names them `1`, `2`, …) or with an outline
//! level start sections; each table row is a line, its cells joined by ` | `. Deleted
//! revisions and field codes are not text.

use std::collections::HashMap;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::archive::Archive;
use super::{ExtractError, ExtractSettings, Format, HeadingSections, Section, contain};

pub(super) fn extract(
    bytes: &[u8],
    settings: &ExtractSettings,
) -> Result<Vec<Section>, ExtractError> {
    contain(Format::Docx, || {
        let mut archive = Archive::open(bytes, Format::Docx, settings)?;
        let styles = match archive.read("word/styles.xml")? {
            Some(xml) => heading_styles(utf8(&xml, "word/styles.xml")?)?,
            None => HashMap::new(),
        };
        let document = archive
            .read("word/document.xml")?
            .ok_or_else(|| corrupt("it has no word/document.xml"))?;
        body(utf8(&document, "word/document.xml")?, &styles)
    })
}

fn corrupt(reason: impl Into<String>) -> ExtractError {
    ExtractError::Corrupt {
        format: Format::Docx,
        reason: reason.into(),
    }
}

fn utf8<'b>(bytes: &'b [u8], part: &str) -> Result<&'b str, ExtractError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| corrupt(format!("{part} is not UTF-8: {e}")))
}

fn xml_error(part: &str, reader: &Reader<&[u8]>, e: impl std::fmt::Display) -> ExtractError {
    corrupt(format!(
        "{part} is not well-formed XML at byte {}: {e}",
        reader.buffer_position()
    ))
}

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    let a = e.try_get_attribute(name).ok().flatten()?;
    a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
        .ok()
        .map(|v| v.into_owned())
}

/// Paragraph style id → heading level (0 for Title, 1.. for headings), from each style's name
/// (`Title`, `heading 1`…) or its outline level.
fn heading_styles(xml: &str) -> Result<HashMap<String, u8>, ExtractError> {
    let mut reader = Reader::from_str(xml);
    let mut styles = HashMap::new();
    let mut current: Option<String> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| xml_error("word/styles.xml", &reader, e))?;
        match event {
            Event::Start(e) if e.local_name().as_ref() == "style" => {
                current = attr(&e, "w:styleId")
            }
            Event::End(e) if e.local_name().as_ref() == "style" => current = None,
            Event::Empty(e) | Event::Start(e) => {
                let Some(id) = &current else { continue };
                let level = match e.local_name().as_ref() {
                    "name" => attr(&e, "w:val").and_then(|name| level_of_style_name(&name)),
                    "outlineLvl" => attr(&e, "w:val").and_then(|v| outline_level(&v)),
                    _ => None,
                };
                if let Some(level) = level {
                    styles.entry(id.clone()).or_insert(level);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(styles)
}

fn level_of_style_name(name: &str) -> Option<u8> {
    let lower = name.to_ascii_lowercase();
    if lower == "title" {
        return Some(0);
    }
    let n: u8 = lower.strip_prefix("heading ")?.trim().parse().ok()?;
    (1..=9).contains(&n).then_some(n)
}

/// `w:outlineLvl` 0–8 is heading 1–9; 9 is body text.
fn outline_level(value: &str) -> Option<u8> {
    let n: u8 = value.parse().ok()?;
    (n < 9).then_some(n + 1)
}

#[derive(Default)]
struct Paragraph {
    text: String,
    level: Option<u8>,
}

/// The paragraphs and table rows of `word/document.xml` as sections under their headings.
/// Long because it is one pass over the XML events, whose arms share the paragraph, table and
/// heading state.
fn body(xml: &str, styles: &HashMap<String, u8>) -> Result<Vec<Section>, ExtractError> {
    let part = "word/document.xml";
    let mut reader = Reader::from_str(xml);
    let mut out = HeadingSections::default();
    let mut paragraph: Option<Paragraph> = None;
    // Table nesting, and the cells of the row being read (of the outermost table).
    let mut tables = 0usize;
    let mut row: Vec<String> = Vec::new();
    let mut cell = String::new();
    // Inside `w:t` (text) / `w:del` (deleted revision) / `w:instrText` (field code).
    let mut in_text = false;
    let mut skipped = 0usize;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| xml_error(part, &reader, e))?;
        match event {
            Event::Start(e) => match e.local_name().as_ref() {
                "p" => paragraph = Some(Paragraph::default()),
                "t" => in_text = true,
                "del" | "instrText" | "delText" => skipped += 1,
                "tbl" => tables += 1,
                "tr" if tables == 1 => row.clear(),
                "tc" if tables == 1 => cell.clear(),
                _ => {}
            },
            Event::Empty(e) => {
                let text = match e.local_name().as_ref() {
                    "tab" => "\t",
                    "br" | "cr" => "\n",
                    "noBreakHyphen" => "-",
                    "pStyle" => {
                        if let Some(p) = &mut paragraph
                            && let Some(level) =
                                attr(&e, "w:val").and_then(|s| styles.get(&s).copied())
                        {
                            p.level = Some(level);
                        }
                        ""
                    }
                    "outlineLvl" => {
                        if let Some(p) = &mut paragraph
                            && let Some(level) = attr(&e, "w:val").and_then(|v| outline_level(&v))
                        {
                            p.level = Some(level);
                        }
                        ""
                    }
                    _ => "",
                };
                if let Some(p) = &mut paragraph
                    && skipped == 0
                {
                    p.text.push_str(text);
                }
            }
            Event::Text(t) if in_text && skipped == 0 => {
                if let Some(p) = &mut paragraph {
                    p.text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) if in_text && skipped == 0 => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => quick_xml::escape::resolve_predefined_entity(&r.xml10_content())
                        .unwrap_or_default()
                        .to_string(),
                };
                if let Some(p) = &mut paragraph {
                    p.text.push_str(&resolved);
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                "t" => in_text = false,
                "del" | "instrText" | "delText" => skipped = skipped.saturating_sub(1),
                "p" => {
                    let Some(p) = paragraph.take() else { continue };
                    if tables > 0 {
                        if !cell.is_empty() && !p.text.trim().is_empty() {
                            cell.push(' ');
                        }
                        cell.push_str(p.text.trim());
                    } else if let Some(level) = p.level {
                        out.heading(level + 1, &p.text);
                    } else {
                        out.push_text(&p.text);
                        out.paragraph();
                    }
                }
                "tc" if tables == 1 => row.push(std::mem::take(&mut cell)),
                "tr" if tables == 1 => {
                    let cells: Vec<&str> = row.iter().map(|c| c.trim()).collect();
                    if cells.iter().any(|c| !c.is_empty()) {
                        out.push_text(&cells.join(" | "));
                        out.line();
                    }
                }
                "tbl" => {
                    tables = tables.saturating_sub(1);
                    if tables == 0 {
                        out.paragraph();
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out.into_sections())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::Citation;

    fn sections(bytes: &[u8]) -> Result<Vec<(Vec<String>, String)>, ExtractError> {
        Ok(extract(bytes, &ExtractSettings::default())?
            .into_iter()
            .map(|s| match s.citation {
                Citation::Headings { path } => (path, s.text),
                other => panic!("{other:?}"),
            })
            .collect())
    }

    #[test]
    fn headings_paragraphs_and_table_rows() {
        let got = sections(include_bytes!("../../../dev/samples/documents/report.docx")).unwrap();
        let paths: Vec<Vec<&str>> = got
            .iter()
            .map(|(p, _)| p.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(
            paths,
            vec![
                vec!["年次報告書"],
                vec!["年次報告書", "1. 概要"],
                vec!["年次報告書", "1. 概要", "1.1 スケジュール"],
                vec!["年次報告書", "2. Results"],
                vec!["年次報告書", "2. Results", "2.1 Direct outline"],
                vec![
                    "年次報告書",
                    "2. Results",
                    "2.1 Direct outline",
                    "2.1.1 Third level"
                ],
            ]
        );
        assert_eq!(got[0].1, "年次報告書\n\nこの文書は社内向けです。");
        // Runs join; a tab is a space; deleted text and field codes are gone.
        assert_eq!(got[1].1, "1. 概要\n\n移行は 三段階で行います。 (予定)");
        assert_eq!(
            got[2].1,
            "1.1 スケジュール\n\n次の表のとおりです。\n\n項目 | 内容\n対象 | 全社員\n期限 | 6月末"
        );
        assert_eq!(got[4].1, "2.1 Direct outline\n\nLine one\nLine two");
    }

    #[test]
    fn damaged_files_are_typed_errors() {
        let truncated = include_bytes!("../../../dev/samples/documents/hostile/truncated.docx");
        let e = sections(truncated).unwrap_err();
        assert_eq!(e.kind(), "corrupt", "{e}");
        let bad_xml = include_bytes!("../../../dev/samples/documents/hostile/bad-xml.docx");
        let e = sections(bad_xml).unwrap_err();
        assert_eq!(e.kind(), "corrupt", "{e}");
        assert!(e.to_string().contains("word/document.xml"), "{e}");
        let xlsx = include_bytes!("../../../dev/samples/documents/workbook.xlsx");
        let e = sections(xlsx).unwrap_err();
        assert!(e.to_string().contains("no word/document.xml"), "{e}");
    }
}
