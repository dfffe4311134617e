//! Splits a document's text into chunks of at most `max_chars` characters, on paragraph and
//! sentence ends, with a sentence-aligned overlap between neighbours.

use unicode_segmentation::GraphemeCursor;

/// How text is cut into chunks. Both sizes count Unicode scalar values, not bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSettings {
    pub max_chars: usize,
    pub overlap_chars: usize,
}

/// A run of text that ends where a cut is allowed: a sentence, a line, or a piece of an
/// over-long sentence.
#[derive(Debug, Clone, Copy)]
struct Segment {
    start: usize,
    end: usize,
    chars: usize,
    ends_paragraph: bool,
}

/// Chunks `text`. Empty or whitespace-only text gives no chunks; every chunk is trimmed and
/// holds at most `settings.max_chars` characters.
pub fn chunk_text(text: &str, settings: &ChunkSettings) -> Vec<String> {
    let max = settings.max_chars.max(1);
    let text = text.trim();
    if text.is_empty() {
        return Vec::new();
    }
    if text.chars().count() <= max {
        return vec![text.to_owned()];
    }

    let segments = segments(text, max);
    let mut chunks = Vec::new();
    let mut current: Vec<Segment> = Vec::new();
    let mut current_chars = 0;

    for seg in segments {
        if current_chars + seg.chars > max && !current.is_empty() {
            // Cut at the last paragraph end in the second half of the chunk when what follows it
            // still fits beside the new segment; else at the last sentence end.
            let cut = paragraph_cut(&current, max)
                .filter(|&cut| chars_of(&current[cut..]) + seg.chars <= max)
                .unwrap_or(current.len());
            let carried = current.split_off(cut);
            push_chunk(text, &current, &mut chunks);

            // The overlap yields to content: drop it from the front until the new segment fits.
            let mut next = overlap(&current, settings.overlap_chars);
            let room = max - chars_of(&carried) - seg.chars;
            while chars_of(&next) > room {
                next.remove(0);
            }
            next.extend(carried);
            current_chars = chars_of(&next);
            current = next;
        }
        current_chars += seg.chars;
        current.push(seg);
    }
    push_chunk(text, &current, &mut chunks);
    chunks
}

fn chars_of(segs: &[Segment]) -> usize {
    segs.iter().map(|s| s.chars).sum()
}

fn push_chunk(text: &str, segs: &[Segment], chunks: &mut Vec<String>) {
    if let (Some(first), Some(last)) = (segs.first(), segs.last()) {
        let chunk = text[first.start..last.end].trim();
        if !chunk.is_empty() {
            chunks.push(chunk.to_owned());
        }
    }
}

/// Index just past the last paragraph-ending segment that lies in the chunk's second half.
fn paragraph_cut(segs: &[Segment], max: usize) -> Option<usize> {
    let mut chars = 0;
    let mut cut = None;
    for (i, s) in segs.iter().enumerate() {
        chars += s.chars;
        if s.ends_paragraph && chars * 2 >= max && i + 1 < segs.len() {
            cut = Some(i + 1);
        }
    }
    cut
}

/// The trailing whole segments of a finished chunk that fit in `overlap_chars`; never the whole
/// chunk, so every chunk advances.
fn overlap(prev: &[Segment], overlap_chars: usize) -> Vec<Segment> {
    let mut taken = 0;
    let mut chars = 0;
    for s in prev.iter().skip(1).rev() {
        if chars + s.chars > overlap_chars {
            break;
        }
        chars += s.chars;
        taken += 1;
    }
    prev[prev.len() - taken..].to_vec()
}

fn is_full_stop(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '．' | '｡')
}

fn is_ascii_stop(c: char) -> bool {
    matches!(c, '.' | '!' | '?')
}

fn is_closer(c: char) -> bool {
    matches!(
        c,
        '」' | '』' | '）' | ')' | '"' | '\'' | '”' | '’' | ']' | '】' | '〕' | '》' | '〉'
    )
}

/// Splits text into sentence and line segments, then cuts any segment longer than `max`.
fn segments(text: &str, max: usize) -> Vec<Segment> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = Vec::new();
    let mut start = 0usize; // index into `chars`
    let mut i = 0usize;
    while i < chars.len() {
        let c = chars[i].1;
        let mut boundary = None;
        if c == '\n' {
            boundary = Some(i + 1);
        } else if is_full_stop(c) || is_ascii_stop(c) {
            let mut j = i + 1;
            while j < chars.len() && (is_closer(chars[j].1) || chars[j].1 == c) {
                j += 1;
            }
            // "3.14", "e.g.x" and "U.S.A" are not sentence ends; a full-width stop always is.
            if is_full_stop(c) || j == chars.len() || chars[j].1.is_whitespace() {
                boundary = Some(j);
            }
        }
        if let Some(mut end) = boundary {
            // Trailing whitespace belongs to the sentence it follows.
            let mut newlines = usize::from(c == '\n');
            while end < chars.len() && chars[end].1.is_whitespace() {
                newlines += usize::from(chars[end].1 == '\n');
                end += 1;
            }
            push_segment(text, &chars, start, end, newlines >= 2, max, &mut out);
            start = end;
            i = end;
        } else {
            i += 1;
        }
    }
    if start < chars.len() {
        push_segment(text, &chars, start, chars.len(), true, max, &mut out);
    }
    out
}

/// Pushes chars[start..end] as one segment, or as several when it is longer than `max`.
fn push_segment(
    text: &str,
    chars: &[(usize, char)],
    start: usize,
    end: usize,
    ends_paragraph: bool,
    max: usize,
    out: &mut Vec<Segment>,
) {
    let byte = |i: usize| {
        if i < chars.len() {
            chars[i].0
        } else {
            text.len()
        }
    };
    let mut s = start;
    while end - s > max {
        let cut = soft_cut(text, chars, s, s + max);
        out.push(Segment {
            start: byte(s),
            end: byte(cut),
            chars: cut - s,
            ends_paragraph: false,
        });
        s = cut;
    }
    if s < end {
        out.push(Segment {
            start: byte(s),
            end: byte(end),
            chars: end - s,
            ends_paragraph,
        });
    }
}

/// Where to cut an over-long sentence at or before `limit`: after the last space or clause mark
/// in the window's last third, else at the start of the grapheme cluster `limit` falls in (a
/// letter and its combining marks, a Hangul syllable's jamo, an emoji sequence or flag stay
/// whole), or at `limit` itself when one cluster fills the window.
fn soft_cut(text: &str, chars: &[(usize, char)], start: usize, limit: usize) -> usize {
    let floor = start + (limit - start) * 2 / 3;
    for i in (floor + 1..=limit).rev() {
        let prev = chars[i - 1].1;
        if prev.is_whitespace() || matches!(prev, '、' | '，' | ',' | ';' | '；' | ':' | '：') {
            return i;
        }
    }
    match grapheme_start(text, chars, limit) {
        cut if cut > start => cut,
        _ => limit,
    }
}

/// The index in `chars` of the start of the extended grapheme cluster (UAX #29) that holds
/// `chars[i]`; `i` itself at a cluster boundary or the end of the text.
fn grapheme_start(text: &str, chars: &[(usize, char)], i: usize) -> usize {
    let Some(&(byte, _)) = chars.get(i) else {
        return i;
    };
    let mut cursor = GraphemeCursor::new(byte, text.len(), true);
    // The whole text is the one chunk the cursor reads, so it never asks for more context.
    if cursor.is_boundary(text, 0).unwrap_or(true) {
        return i;
    }
    match cursor.prev_boundary(text, 0) {
        Ok(Some(b)) => chars.partition_point(|&(offset, _)| offset < b),
        _ => i,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max: usize, overlap: usize) -> ChunkSettings {
        ChunkSettings {
            max_chars: max,
            overlap_chars: overlap,
        }
    }

    fn assert_within(chunks: &[String], max: usize) {
        for c in chunks {
            assert!(
                c.chars().count() <= max,
                "chunk of {} chars > {max}: {c:?}",
                c.chars().count()
            );
            assert!(!c.is_empty());
        }
    }

    #[test]
    fn empty_and_blank_text_give_nothing() {
        assert!(chunk_text("", &settings(10, 2)).is_empty());
        assert!(chunk_text(" \n\t ", &settings(10, 2)).is_empty());
    }

    #[test]
    fn short_text_is_one_trimmed_chunk() {
        assert_eq!(
            chunk_text("  hello world.\n", &settings(100, 10)),
            vec!["hello world."]
        );
    }

    #[test]
    fn japanese_splits_only_at_sentence_ends() {
        let text = "東京は日本の首都です。大阪は食の都として知られています。京都には多くの寺があります。北海道は冬に雪が多いです。";
        let chunks = chunk_text(text, &settings(30, 0));
        assert_within(&chunks, 30);
        for c in &chunks {
            assert!(c.ends_with('。'), "mid-sentence split: {c:?}");
        }
        assert_eq!(chunks.concat(), text);
    }

    #[test]
    fn english_sentences_and_decimals() {
        let text = "Pi is about 3.14 and e is 2.71. These are constants! Are they useful? Yes.";
        let chunks = chunk_text(text, &settings(40, 0));
        assert_within(&chunks, 40);
        assert!(
            chunks.iter().any(|c| c.contains("3.14 and e is 2.71.")),
            "{chunks:?}"
        );
        for c in &chunks {
            assert!(c.ends_with(['.', '!', '?']), "{c:?}");
        }
    }

    #[test]
    fn overlap_repeats_whole_sentences() {
        let text = "One two three. Four five six. Seven eight nine. Ten eleven twelve.";
        let chunks = chunk_text(text, &settings(40, 20));
        assert_within(&chunks, 40);
        assert!(chunks.len() >= 2);
        // Each chunk after the first begins with the last sentence of the one before it.
        for pair in chunks.windows(2) {
            let last_sentence = pair[0].rsplit_terminator(". ").next().unwrap();
            assert!(
                pair[1].starts_with(last_sentence.trim_end_matches('.')),
                "{pair:?}"
            );
        }
    }

    #[test]
    fn no_overlap_never_loses_or_repeats_text() {
        let text = "a. ".repeat(200) + "end";
        let chunks = chunk_text(&text, &settings(25, 0));
        assert_within(&chunks, 25);
        let rejoined: String = chunks.join(" ");
        assert_eq!(
            rejoined.split_whitespace().count(),
            text.split_whitespace().count()
        );
    }

    #[test]
    fn over_long_sentence_is_cut_at_spaces_or_clauses() {
        let text = "word ".repeat(100);
        let chunks = chunk_text(&text, &settings(23, 0));
        assert_within(&chunks, 23);
        for c in &chunks {
            assert!(c.split(' ').all(|w| w == "word"), "{c:?}");
        }
        let jp = "これは、とても、長い、文で、句点が、なかなか、来ない、ので、読点で、切る、しかない、です".repeat(3);
        let chunks = chunk_text(&jp, &settings(20, 0));
        assert_within(&chunks, 20);
        assert_eq!(chunks.concat(), jp);
        assert!(
            chunks[..chunks.len() - 1]
                .iter()
                .all(|c| c.ends_with('、') || c.ends_with("です"))
        );
    }

    #[test]
    fn unbroken_text_is_cut_on_char_boundaries() {
        let text = "字".repeat(95);
        let chunks = chunk_text(&text, &settings(10, 3));
        assert_within(&chunks, 10);
        assert_eq!(chunks.len(), 10);
        assert_eq!(chunks.concat(), text);
    }

    #[test]
    fn combining_marks_and_emoji_sequences_stay_whole() {
        // "か" + combining dakuten, and a ZWJ family emoji, straddling the cut point.
        let text = format!("{}か\u{3099}{}", "x".repeat(9), "y".repeat(9));
        let chunks = chunk_text(&text, &settings(10, 0));
        assert!(
            chunks.iter().all(|c| !c.starts_with('\u{3099}')),
            "{chunks:?}"
        );
        let family = "👨\u{200D}👩\u{200D}👧";
        let text = format!("{}{family}{}", "x".repeat(8), "y".repeat(8));
        let chunks = chunk_text(&text, &settings(10, 0));
        assert!(
            chunks
                .iter()
                .all(|c| !c.starts_with('\u{200D}') && !c.ends_with('\u{200D}')),
            "{chunks:?}"
        );
        assert_eq!(chunks.concat(), text);
    }

    #[test]
    fn no_script_is_cut_inside_a_character() {
        // Each straddles the cut at 10: a flag (two regional indicators), a Hangul syllable of
        // three conjoining jamo, a Devanagari consonant with its vowel sign, a Thai consonant
        // with SARA AM, a skin-toned emoji and a letter with two stacked accents.
        for cluster in [
            "🇯🇵",
            "\u{1100}\u{1161}\u{11A8}",
            "कि",
            "กำ",
            "👍🏽",
            "e\u{0301}\u{0323}",
        ] {
            let text = format!("{}{cluster}{}", "x".repeat(9), "y".repeat(9));
            let chunks = chunk_text(&text, &settings(10, 0));
            assert_within(&chunks, 10);
            assert_eq!(chunks.concat(), text, "{cluster:?}");
            assert!(
                chunks.iter().any(|c| c.starts_with(cluster)),
                "{cluster:?} was cut: {chunks:?}"
            );
        }
    }

    #[test]
    fn prefers_paragraph_ends() {
        let text = "First paragraph sentence one. Sentence two.\n\nSecond paragraph here. And more text follows. Yet more.";
        let chunks = chunk_text(text, &settings(60, 0));
        assert_within(&chunks, 60);
        assert_eq!(chunks[0], "First paragraph sentence one. Sentence two.");
    }

    #[test]
    fn closing_quotes_stay_with_their_sentence() {
        let text = "彼は「行きます。」と言った。次の文です。さらに次の文があります。";
        let chunks = chunk_text(text, &settings(16, 0));
        assert_within(&chunks, 16);
        assert!(chunks.iter().all(|c| !c.starts_with('」')), "{chunks:?}");
    }

    #[test]
    fn crlf_lines_are_boundaries() {
        let text = "line one\r\nline two\r\nline three\r\n";
        let chunks = chunk_text(text, &settings(12, 0));
        assert_eq!(chunks, vec!["line one", "line two", "line three"]);
    }

    #[test]
    fn hostile_inputs_hold_the_limit() {
        let cases = [
            "\u{0}\u{1}\u{2}".repeat(50),
            "。".repeat(300),
            "\n".repeat(100) + "x",
            "🎉".repeat(77),
            "a\u{0301}".repeat(60),
        ];
        for text in &cases {
            for max in [1, 2, 7, 50] {
                let chunks = chunk_text(text, &settings(max, max / 2));
                assert_within(&chunks, max);
            }
        }
    }
}
