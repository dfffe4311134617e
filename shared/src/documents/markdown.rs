//! Markdown (CommonMark with tables), a section per heading: the text under it until the next
//! heading, paragraphs, list items, code blocks and table rows each on their own lines.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

use super::{HeadingSections, Section};

pub(super) fn extract(text: &str) -> Vec<Section> {
    let mut out = HeadingSections::default();
    let mut heading: Option<(u8, String)> = None;
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    for event in Parser::new_ext(text, options) {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                heading = Some((level as u8, String::new()))
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, title)) = heading.take() {
                    out.heading(level, &title);
                }
            }
            Event::Text(t) | Event::Code(t) | Event::InlineHtml(t) | Event::Html(t) => {
                match &mut heading {
                    Some((_, title)) => title.push_str(&t),
                    None => out.push_text(&t),
                }
            }
            Event::SoftBreak | Event::HardBreak => match &mut heading {
                Some((_, title)) => title.push(' '),
                None => out.line(),
            },
            Event::End(TagEnd::Paragraph | TagEnd::CodeBlock | TagEnd::BlockQuote(_))
            | Event::End(TagEnd::List(_) | TagEnd::Table) => out.paragraph(),
            Event::End(TagEnd::Item | TagEnd::TableHead | TagEnd::TableRow) => out.line(),
            Event::End(TagEnd::TableCell) => out.push_text(" | "),
            Event::Start(Tag::Item) => out.push_text("- "),
            Event::Rule => out.paragraph(),
            _ => {}
        }
    }
    let mut sections = out.into_sections();
    for section in &mut sections {
        // A row's last cell leaves a separator behind.
        section.text = section
            .text
            .lines()
            .map(|l| l.strip_suffix(" |").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
    }
    sections
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::Citation;

    fn path(section: &Section) -> Vec<&str> {
        match &section.citation {
            Citation::Headings { path } => path.iter().map(String::as_str).collect(),
            other => panic!("not a heading citation: {other:?}"),
        }
    }

    #[test]
    fn sections_follow_nested_headings() {
        let md = std::str::from_utf8(include_bytes!(
            "../../../dev/samples/documents/manual-ja.md"
        ))
        .unwrap();
        let sections = extract(md);
        let paths: Vec<Vec<&str>> = sections.iter().map(path).collect();
        assert_eq!(
            paths,
            vec![
                vec!["導入ガイド"],
                vec!["導入ガイド", "1. 準備"],
                vec!["導入ガイド", "1. 準備", "1.1 権限"],
                vec!["導入ガイド", "2. Installation"],
                vec!["導入ガイド", "2. Installation", "2.1 Network"],
                vec!["付録"],
            ]
        );
        assert_eq!(
            sections[2].text,
            "1.1 権限\n\nIAM ロールには S3 の読み取り権限が要ります。\n\n- s3:GetObject\n- s3:ListBucket"
        );
        assert_eq!(
            sections[3].text,
            "2. Installation\n\nRun the following command:\n\nsam deploy --guided"
        );
        assert!(
            sections[4]
                .text
                .ends_with("項目 | 値\nポート | 9200\nTLS | 必須"),
            "{}",
            sections[4].text
        );
    }

    #[test]
    fn text_before_the_first_heading_has_an_empty_path() {
        let sections = extract("Intro line\nsame paragraph\n\n## Deep first\n\nbody");
        assert_eq!(sections[0].text, "Intro line\nsame paragraph");
        assert!(path(&sections[0]).is_empty());
        assert_eq!(path(&sections[1]), vec!["Deep first"]);
    }

    #[test]
    fn a_shallower_heading_cuts_the_path_back() {
        let sections = extract("# A\n\n### A.x\n\nx\n\n## B\n\nb\n\n# C\n\nc");
        let paths: Vec<Vec<&str>> = sections.iter().map(path).collect();
        assert_eq!(paths, vec![vec!["A", "A.x"], vec!["A", "B"], vec!["C"]]);
    }
}
