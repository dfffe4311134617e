//! HTML, a section per heading (`h1`–`h6`) like Markdown. The page's chrome and code are
//! dropped: `head`, `nav`, `script`, `style`, `noscript`, `template`, `svg`, forms' controls.
//!
//! A walk over html5ever's tokens (the WHATWG tokenizer: entities, raw text in `script` and
//! `style`, broken markup recovered as browsers do), not a tree: text extraction needs no DOM,
//! and the tokenizer alone is a fraction of a tree builder's or a converter's dependencies.

use std::cell::RefCell;

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{
    BufferQueue, Tag, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};

use super::{Format, HeadingSections, Section, contain};

pub(super) fn extract(text: &str) -> Result<Vec<Section>, super::ExtractError> {
    contain(Format::Html, || {
        let sink = Sink::default();
        let tokenizer = Tokenizer::new(sink, TokenizerOpts::default());
        let input = BufferQueue::default();
        input.push_back(StrTendril::from_slice(text));
        // The sink never asks the tokenizer to pause for a script, so one feed reads it all.
        let _ = tokenizer.feed(&input);
        tokenizer.end();
        let state = tokenizer.sink.state.into_inner();
        Ok(state.out.into_sections())
    })
}

/// Elements whose content is not the page's text.
const DROPPED: &[&str] = &[
    "head", "title", "nav", "script", "style", "noscript", "template", "svg", "math", "iframe",
    "object", "canvas", "select", "button", "datalist", "textarea",
];

/// Elements that end a paragraph (a blank line) or a line.
const PARAGRAPHS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "header",
    "footer",
    "aside",
    "blockquote",
    "pre",
    "ul",
    "ol",
    "dl",
    "table",
    "figure",
    "figcaption",
    "form",
    "fieldset",
    "address",
    "details",
    "summary",
    "hr",
];
const LINES: &[&str] = &["br", "li", "dt", "dd", "tr", "caption"];

#[derive(Default)]
struct Sink {
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    out: HeadingSections,
    /// Open dropped elements, innermost last.
    dropped: Vec<String>,
    heading: Option<(u8, String)>,
    pre: usize,
}

impl State {
    fn tag(&mut self, tag: &Tag) -> TokenSinkResult<()> {
        let name: &str = &tag.name;
        let start = tag.kind == TagKind::StartTag;
        if DROPPED.contains(&name) {
            if start && !tag.self_closing {
                self.dropped.push(name.to_string());
            } else if !start && let Some(at) = self.dropped.iter().rposition(|n| n == name) {
                self.dropped.truncate(at);
            }
            // The tokenizer must read these elements' content as text, as a browser does,
            // or a `<` in a script would start a tag.
            return match (start, name) {
                (true, "script") => TokenSinkResult::RawData(RawKind::ScriptData),
                (true, "style" | "iframe" | "noscript") => {
                    TokenSinkResult::RawData(RawKind::Rawtext)
                }
                (true, "title" | "textarea") => TokenSinkResult::RawData(RawKind::Rcdata),
                _ => TokenSinkResult::Continue,
            };
        }
        if !self.dropped.is_empty() {
            return TokenSinkResult::Continue;
        }
        if let Some(level) = heading_level(name) {
            if start {
                self.heading = Some((level, String::new()));
            } else if let Some((level, title)) = self.heading.take() {
                self.out.heading(level, &title);
            }
            return TokenSinkResult::Continue;
        }
        match name {
            "pre" if start => self.pre += 1,
            "pre" => self.pre = self.pre.saturating_sub(1),
            "td" | "th" if !start => self.push(" | "),
            "img" => {
                // An image's alternative text is the page's text where the image stands.
                if let Some(alt) = tag.attrs.iter().find(|a| &*a.name.local == "alt") {
                    self.push(&alt.value);
                }
            }
            _ => {}
        }
        if PARAGRAPHS.contains(&name) {
            self.out.paragraph();
        } else if LINES.contains(&name) {
            self.trim_cell_separator();
            self.out.line();
        }
        TokenSinkResult::Continue
    }

    fn text(&mut self, text: &str) {
        if !self.dropped.is_empty() {
            return;
        }
        if self.pre > 0 {
            self.push(text);
            return;
        }
        // Outside `pre`, any run of white space is one space.
        let mut collapsed = String::with_capacity(text.len());
        let mut space = false;
        for c in text.chars() {
            if c.is_ascii_whitespace() {
                space = true;
                continue;
            }
            if space {
                collapsed.push(' ');
                space = false;
            }
            collapsed.push(c);
        }
        if space {
            collapsed.push(' ');
        }
        self.push(&collapsed);
    }

    fn push(&mut self, text: &str) {
        // White space between blocks (the line breaks between table rows) is not text.
        let at_line_start = self.out.text.is_empty() || self.out.text.ends_with(['\n', ' ']);
        if self.heading.is_none() && text.trim().is_empty() && at_line_start {
            return;
        }
        match &mut self.heading {
            Some((_, title)) => title.push_str(text),
            None => self.out.push_text(text),
        }
    }

    /// A table row's last cell leaves a separator; the row ends there.
    fn trim_cell_separator(&mut self) {
        let text = &mut self.out.text;
        let trimmed = text.trim_end_matches([' ', '|']).len();
        if text.ends_with(" | ") {
            text.truncate(trimmed);
        }
    }
}

fn heading_level(name: &str) -> Option<u8> {
    match name.as_bytes() {
        [b'h', d @ b'1'..=b'6'] => Some(d - b'0'),
        _ => None,
    }
}

impl TokenSink for Sink {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let mut state = self.state.borrow_mut();
        match token {
            Token::TagToken(tag) => state.tag(&tag),
            Token::CharacterTokens(text) => {
                state.text(&text);
                TokenSinkResult::Continue
            }
            _ => TokenSinkResult::Continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::Citation;

    fn sections(html: &str) -> Vec<(Vec<String>, String)> {
        extract(html)
            .unwrap()
            .into_iter()
            .map(|s| match s.citation {
                Citation::Headings { path } => (path, s.text),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn headings_and_text_without_the_page_chrome() {
        let page = std::str::from_utf8(include_bytes!("../../../dev/samples/documents/page.html"))
            .unwrap();
        let got = sections(page);
        let all: String = got.iter().map(|(_, t)| t.as_str()).collect();
        for dropped in [
            "style text",
            "script text",
            "written",
            "nav text",
            "ホーム",
            "noscript",
            "json-ld",
            "Example",
            "font-family",
        ] {
            assert!(
                !all.contains(dropped),
                "{dropped:?} should be dropped: {all}"
            );
        }
        let paths: Vec<Vec<&str>> = got
            .iter()
            .map(|(p, _)| p.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(
            paths,
            vec![
                vec!["製品案内"],
                vec!["製品案内", "料金"],
                vec!["製品案内", "料金", "割引"],
                vec!["製品案内", "Support"],
            ]
        );
        assert_eq!(
            got[0].1,
            "製品案内\n\n当社の検索サービスは & 文書を すばやく探します。<高速> ❤ あ"
        );
        assert_eq!(
            got[1].1,
            "料金\n\n基本料金は月額1,000円です。\n\nプラン | 月額\nBasic | 1,000円\nPro | 5,000円"
        );
        assert_eq!(got[2].1, "割引\n\n年払いは10%引き。\n学生は半額。");
        assert_eq!(got[3].1, "Support\n\nEmail\nPhone");
    }

    #[test]
    fn broken_markup_is_read_as_a_browser_would() {
        let got = sections("<h2>Un<b>closed</h2><p>a &lt b <script>x</p><p>never");
        assert_eq!(
            got,
            vec![(vec!["Unclosed".to_string()], "Unclosed\n\na < b".into())]
        );
        let got = sections("<pre>  keep\n   spacing </pre><div>a\n\n   b</div>");
        assert_eq!(got[0].1, "keep\nspacing\n\na b");
        // A lone `<` is text, as a browser shows it.
        assert_eq!(sections("<"), vec![(vec![], "<".into())]);
    }
}
