//! Every fixture from its bytes to its sections, as ingest will call it: detect, then extract;
//! and hostile input, which must end in a typed error within bounded time and memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;

/// Counts the bytes live on each thread, so a test can read the peak its own work reached
/// while other tests run on other threads.
struct ThreadCounting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call goes to `System` unchanged; the counters are `const` thread-locals
// (no allocation, no destructor), so counting cannot recurse into the allocator.
unsafe impl GlobalAlloc for ThreadCounting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|live| {
            let now = live.get() + layout.size();
            live.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(layout.size())));
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: ThreadCounting = ThreadCounting;

/// Runs `work`, returning its result, how long it took and the most bytes it held at once
/// (beyond what this thread held before).
fn measured<T>(work: impl FnOnce() -> T) -> (T, Duration, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let started = Instant::now();
    let result = work();
    let elapsed = started.elapsed();
    let peak = PEAK.with(Cell::get) - base;
    (result, elapsed, peak)
}

const MIB: usize = 1024 * 1024;

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev/samples/documents")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(samples().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Detects the sample's format from its name and bytes, then reads it through the reader API.
fn sections_of(name: &str) -> Result<Vec<Section>, ExtractError> {
    let bytes = read(name);
    let detection = detect(name, None, &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    extract(
        detection.format,
        Cursor::new(bytes),
        &ExtractSettings::default(),
    )?
    .collect_sections()
}

#[test]
fn every_sample_detects_and_reads() {
    let expected = [
        ("manual-ja.md", Format::Markdown, 6),
        ("page.html", Format::Html, 4),
        ("notes.txt", Format::Text, 4),
        ("notes-utf16.txt", Format::Text, 4),
        ("prices.csv", Format::Csv, 4),
        ("workbook.xlsx", Format::Xlsx, 4),
        ("report.docx", Format::Docx, 6),
        ("manual.pdf", Format::Pdf, 3),
    ];
    for (name, format, count) in expected {
        let bytes = read(name);
        assert_eq!(detect(name, None, &bytes).unwrap().format, format, "{name}");
        // Without its name, by its bytes (binary) or as text.
        let unnamed = detect("upload", None, &bytes).unwrap().format;
        assert!(
            unnamed == format || !format.is_binary_format(),
            "{name}: {unnamed}"
        );
        let sections = sections_of(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(sections.len(), count, "{name}: {sections:#?}");
        assert!(sections.iter().all(|s| !s.text.trim().is_empty()), "{name}");
    }
}

#[test]
fn plain_text_paragraphs_with_their_lines() {
    for name in ["notes.txt", "notes-utf16.txt"] {
        let got: Vec<(String, String)> = sections_of(name)
            .unwrap()
            .into_iter()
            .map(|s| (s.citation.to_string(), s.text))
            .collect();
        assert_eq!(
            got,
            vec![
                ("line 1".into(), "社内メモ：検索基盤の移行について".into()),
                (
                    "lines 3-4".into(),
                    "旧システムは2025年3月で停止します。\n新システムへの移行は段階的に行います。"
                        .into()
                ),
                (
                    "lines 6-7".into(),
                    "First paragraph in English.\nIt has two lines.".into()
                ),
                ("line 11".into(), "Last paragraph after blank lines.".into()),
            ],
            "{name}"
        );
    }
}

#[test]
fn an_over_long_line_is_cut_not_held() {
    let mut text = "x".repeat(100);
    text.push_str("\n\nshort\n");
    let settings = ExtractSettings {
        max_section_bytes: 10,
        ..ExtractSettings::default()
    };
    let got = extract(Format::Text, Cursor::new(text.into_bytes()), &settings)
        .unwrap()
        .collect_sections()
        .unwrap();
    assert_eq!(got[0].text, "x".repeat(10));
    assert_eq!(got[1].text, "short");
    assert_eq!(got[1].citation, Citation::Lines { first: 3, last: 3 });
}

#[test]
fn the_input_cap_holds_for_streamed_and_whole_formats() {
    // A reader that never ends: the cap must stop it.
    let endless = std::io::repeat(b'a');
    let e = extract(Format::Text, endless, &ExtractSettings::default())
        .unwrap()
        .find_map(Result::err)
        .unwrap();
    assert!(
        matches!(e, ExtractError::TooLarge { format: Format::Text, limit } if limit == MAX_STREAMED_BYTES),
        "{e}"
    );
    let e = extract(
        Format::Pdf,
        std::io::repeat(b'%'),
        &ExtractSettings::default(),
    )
    .err()
    .unwrap();
    assert_eq!(e.kind(), "too_large");
    assert_eq!(
        e.to_string(),
        "the PDF is larger than the 50000000-byte limit"
    );
}

#[test]
fn the_text_cap_holds_across_sections() {
    let csv = "a,b\n".to_string() + &"1234567890,abcdefghij\n".repeat(100);
    let settings = ExtractSettings {
        max_text_bytes: 500,
        ..ExtractSettings::default()
    };
    let results: Vec<_> = extract(Format::Csv, Cursor::new(csv.into_bytes()), &settings)
        .unwrap()
        .collect();
    let last = results.last().unwrap().as_ref().unwrap_err();
    assert_eq!(last.kind(), "too_much_text");
    assert!(results.len() < 30, "stopped at the cap: {}", results.len());
}

#[test]
fn invalid_utf8_names_its_line() {
    let bytes = b"# Title\n\nok\n\nbad \xff byte\n".to_vec();
    let e = extract(
        Format::Markdown,
        Cursor::new(bytes),
        &ExtractSettings::default(),
    )
    .err()
    .unwrap();
    assert!(
        matches!(
            e,
            ExtractError::NotUtf8 {
                line: 5,
                hint: None
            }
        ),
        "{e}"
    );
    let sjis = read("hostile/shift_jis.csv");
    let e = sections_of("hostile/shift_jis.csv").unwrap_err();
    assert_eq!(e.kind(), "not_utf8");
    assert!(e.to_string().contains("Shift_JIS"), "{e}");
    // The same bytes as plain text.
    let e = extract(Format::Text, Cursor::new(sjis), &ExtractSettings::default())
        .unwrap()
        .find_map(Result::err)
        .unwrap();
    assert!(
        e.to_string().contains("(line 1); it reads as Shift_JIS"),
        "{e}"
    );
}

#[test]
fn zip_bombs_stop_within_the_budget() {
    // The honest bomb is refused from its header's size; the lying one by the zip reader once
    // it inflates past the size its header declared (the archive's own count, beneath both,
    // would stop it at the budget).
    for (name, kind) in [
        ("hostile/bomb.docx", "inflation"),
        ("hostile/bomb-lying.xlsx", "corrupt"),
    ] {
        let bytes = read(name);
        let format = detect(name, None, &bytes).unwrap().format;
        let settings = ExtractSettings {
            max_unzipped_bytes: 32 * MIB as u64,
            ..ExtractSettings::default()
        };
        let (result, elapsed, peak) = measured(|| extract_bytes(format, &bytes, &settings));
        let e = result.unwrap_err();
        assert_eq!(e.kind(), kind, "{name}: {e}");
        if kind == "corrupt" {
            assert!(e.to_string().contains("larger than its declared"), "{e}");
        }
        assert!(elapsed < Duration::from_secs(10), "{name}: {elapsed:?}");
        // The budget plus the growth of one buffer (a Vec doubles).
        assert!(peak < 80 * MIB, "{name}: {} MiB", peak / MIB);
    }
    // The honest bomb is refused from its header, before inflating anything.
    let (result, elapsed, peak) = measured(|| {
        extract_bytes(
            Format::Docx,
            &read("hostile/bomb.docx"),
            &ExtractSettings::default(),
        )
    });
    assert!(
        result
            .unwrap_err()
            .to_string()
            .contains("word/document.xml inflates past")
    );
    assert!(peak < 8 * MIB, "{} MiB in {elapsed:?}", peak / MIB);
}

#[test]
fn too_many_zip_entries_are_refused() {
    let bytes = read("hostile/many-entries.docx");
    let settings = ExtractSettings {
        max_zip_entries: 100,
        ..ExtractSettings::default()
    };
    let e = extract_bytes(Format::Docx, &bytes, &settings).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the document expands past its bounds: it lists 302 entries; the limit is 100"
    );
    // Under the default limit it is only a document without text.
    let e = extract_bytes(Format::Docx, &bytes, &ExtractSettings::default()).unwrap_err();
    assert_eq!(e.kind(), "no_text", "{e}");
}

#[test]
fn hostile_documents_end_in_typed_errors() {
    let cases = [
        ("hostile/encrypted.pdf", "encrypted"),
        ("hostile/image-only.pdf", "no_text"),
        ("hostile/truncated.docx", "corrupt"),
        ("hostile/bad-xml.docx", "corrupt"),
    ];
    for (name, kind) in cases {
        let (result, elapsed, peak) = measured(|| sections_of(name));
        let e = result.unwrap_err();
        assert_eq!(e.kind(), kind, "{name}: {e}");
        assert!(e.is_permanent());
        assert!(elapsed < Duration::from_secs(5), "{name}: {elapsed:?}");
        assert!(peak < 16 * MIB, "{name}: {} MiB", peak / MIB);
    }
    let zip_named_pdf = read("hostile/zip-named.pdf");
    let refused = detect(
        "hostile/zip-named.pdf",
        Some("application/pdf"),
        &zip_named_pdf,
    );
    assert!(
        refused
            .unwrap_err()
            .reason
            .contains("bytes are a Word document")
    );
}

#[test]
fn a_panicking_parser_is_contained() {
    let e = contain(Format::Pdf, || -> Result<(), ExtractError> {
        panic!("index out of bounds: the len is 3 but the index is 7")
    })
    .unwrap_err();
    assert_eq!(e.kind(), "parser_panic");
    assert_eq!(
        e.to_string(),
        "the PDF parser failed on this input: index out of bounds: the len is 3 but the index is 7"
    );
}

#[test]
fn every_error_kind_is_named() {
    let errors = [
        ExtractError::TooLarge {
            format: Format::Pdf,
            limit: 1,
        },
        ExtractError::TooMuchText { limit: 1 },
        ExtractError::Encrypted,
        ExtractError::NoText { reason: "r".into() },
        ExtractError::NotUtf8 {
            line: 1,
            hint: None,
        },
        ExtractError::Inflation { reason: "r".into() },
        ExtractError::Corrupt {
            format: Format::Docx,
            reason: "r".into(),
        },
        ExtractError::ParserPanic {
            format: Format::Html,
            reason: "r".into(),
        },
        ExtractError::Row {
            line: 1,
            reason: "r".into(),
        },
        ExtractError::Io(std::io::Error::other("r")),
    ];
    let kinds: std::collections::HashSet<&str> = errors.iter().map(ExtractError::kind).collect();
    assert_eq!(kinds.len(), errors.len());
    assert!(!errors.last().unwrap().is_permanent());
}

#[test]
fn records_are_left_to_the_record_reader() {
    let e = extract(
        Format::Records,
        Cursor::new(b"{}".to_vec()),
        &ExtractSettings::default(),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("record reader"), "{e}");
}

/// The figures behind the crate choices: time and peak memory per document, and the start of
/// its text to read. `SAKUIN_DOCUMENTS_DIR` names another folder of documents to measure.
/// `cargo test -p sakuin --release --lib documents::tests::figures -- --ignored --nocapture`
#[test]
#[ignore = "prints figures; run by hand"]
fn figures() {
    let dir = std::env::var_os("SAKUIN_DOCUMENTS_DIR").map_or_else(samples, PathBuf::from);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    for path in paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let Ok(detection) = detect(&name, None, &bytes) else {
            continue;
        };
        let runs = (2_000_000 / bytes.len().max(1)).clamp(1, 100);
        let (result, elapsed, peak) = measured(|| {
            for _ in 1..runs {
                let _ = extract_bytes(detection.format, &bytes, &ExtractSettings::default());
            }
            extract_bytes(detection.format, &bytes, &ExtractSettings::default())
        });
        let sections = match result {
            Ok(sections) => sections,
            Err(e) => {
                println!("{name}: {e}");
                continue;
            }
        };
        let text: usize = sections.iter().map(|s| s.text.len()).sum();
        println!(
            "{name:>24} {:>10} bytes {:>6} sections {:>10} text bytes {:>10.2} ms peak {:>8} KiB",
            bytes.len(),
            sections.len(),
            text,
            elapsed.as_secs_f64() * 1e3 / runs as f64,
            peak / 1024
        );
        for section in sections.iter().take(3) {
            let start: String = section.text.chars().take(80).collect();
            println!("    [{}] {:?}", section.citation, start);
        }
    }
}
