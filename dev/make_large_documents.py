#!/usr/bin/env python3
"""Writes realistic documents of every format ingest reads, for `sakuin-local bench documents`
and for the share of a Japanese PDF's text recovered. Not kept in the repository (sizes from
hundreds of KB to a few MB); the text is the retrieval corpus's (dev/retrieval/documents).

    python3 dev/make_large_documents.py OUT_DIR          # every format but PDF (standard library)
    python3 dev/make_large_documents.py OUT_DIR --pdf    # also ja-manual.pdf, with reportlab

The PDF is written by reportlab (a producer other than the fixtures' hand-written one), in its
built-in Japanese CID font HeiseiMin-W3 with the predefined CMap UniJIS-UCS2-H, no ToUnicode:
the way many Japanese PDFs are made. Its reference text (ja-manual.reference.txt) is what was
drawn; `--recovery` extracts the PDF with `target/debug/sakuin-local extract --json` and prints
the share of the reference's characters recovered, in order (difflib's matching blocks, spaces
and line breaks left out).
"""

import csv
import difflib
import html
import io
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_documents as md  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "retrieval" / "documents"


def articles(lang):
    """(title, text) of the corpus's long articles in `lang`, handbook then knowledge base."""
    out = []
    for name in (f"handbook-{lang}.json", f"kb-{lang}.json"):
        for doc in json.loads((CORPUS / name).read_text(encoding="utf-8")):
            out.append((doc["title"], doc["text"]))
    return out


def markdown(docs):
    parts = []
    for i, (title, text) in enumerate(docs):
        if i % 10 == 0:
            parts.append(f"# 第{i // 10 + 1}部\n")
        parts.append(f"## {title}\n\n{text}\n")
    return "\n".join(parts)


def html_page(docs):
    body = []
    for i, (title, text) in enumerate(docs):
        if i % 10 == 0:
            body.append(f"<h1>第{i // 10 + 1}部</h1>")
        paragraphs = "".join(f"<p>{html.escape(p)}</p>" for p in text.split("\n\n"))
        body.append(f"<section><h2>{html.escape(title)}</h2>{paragraphs}</section>")
    nav = "<nav><a href='/'>ホーム</a> <a href='/docs'>文書</a></nav><script>var x = '<p>';</script>"
    return f"<!doctype html><html lang='ja'><head><title>手引き</title></head><body>{nav}{''.join(body)}</body></html>"


def csv_rows(docs):
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "title", "text", "category"])
    for i, (title, text) in enumerate(docs):
        writer.writerow([f"R-{i:05d}", title, text, ["faq", "guide", "error"][i % 3]])
    return buf.getvalue()


def docx(docs):
    body = [md.para("ユーザーガイド集", "a3")]
    for i, (title, text) in enumerate(docs):
        if i % 10 == 0:
            body.append(md.para(f"第{i // 10 + 1}部", "1"))
        body.append(md.para(html.escape(title), "2"))
        body.extend(md.para(html.escape(p)) for p in text.split("\n\n"))
    document = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f"<w:document {md.W}><w:body>{''.join(body)}<w:sectPr/></w:body></w:document>"
    )
    return md.zip_bytes([
        ("[Content_Types].xml", md.CONTENT_TYPES_DOCX),
        ("_rels/.rels", md.ROOT_RELS_DOCX),
        ("word/document.xml", document),
        ("word/styles.xml", md.STYLES_DOCX),
    ])


def xlsx(docs):
    def sheet_xml(rows):
        out = []
        for r, values in enumerate(rows, start=1):
            cells = "".join(
                f'<c r="{chr(65 + c)}{r}" t="inlineStr"><is><t>{html.escape(v)}</t></is></c>'
                for c, v in enumerate(values)
            )
            out.append(f'<row r="{r}">{cells}</row>')
        return (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
            f'<sheetData>{"".join(out)}</sheetData></worksheet>'
        )

    rows = [["id", "title", "text"]] + [[f"R-{i:05d}", t, x] for i, (t, x) in enumerate(docs)]
    half = len(rows) // 2
    shared = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="0" uniqueCount="0"/>'
    return md.zip_bytes([
        ("[Content_Types].xml", md.CONTENT_TYPES_XLSX),
        ("_rels/.rels", md.ROOT_RELS_XLSX),
        ("xl/workbook.xml", md.WORKBOOK_XML),
        ("xl/_rels/workbook.xml.rels", md.WORKBOOK_RELS),
        ("xl/sharedStrings.xml", shared),
        ("xl/styles.xml", md.STYLES_XML),
        ("xl/worksheets/sheet1.xml", sheet_xml(rows[:half])),
        ("xl/worksheets/sheet2.xml", sheet_xml([rows[0]] + rows[half:])),
    ])


def pdf(docs, out):
    """ja-manual.pdf and its reference text: each article from a new page, wrapped to width."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("HeiseiMin-W3"))
    c = canvas.Canvas(str(out / "ja-manual.pdf"), pagesize=A4, invariant=1)
    width, height = A4
    reference = []
    per_line = 38
    for title, text in docs:
        y = height - 60
        lines = [title, ""]
        for paragraph in text.split("\n"):
            lines.extend(paragraph[i:i + per_line] for i in range(0, max(len(paragraph), 1), per_line))
        for line in lines:
            if y < 60:
                c.showPage()
                y = height - 60
            c.setFont("HeiseiMin-W3", 12)
            c.drawString(50, y, line)
            reference.append(line)
            y -= 18
        c.showPage()
    c.save()
    (out / "ja-manual.reference.txt").write_text("\n".join(reference), encoding="utf-8")


def recovery(out):
    """The share of the reference's characters the extraction recovers, in order."""
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [str(root / "target/debug/sakuin-local"), "extract", "--json", str(out / "ja-manual.pdf")],
        capture_output=True, text=True, check=True,
    )
    sections = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    got = "".join(s["text"] for s in sections)
    ref = (out / "ja-manual.reference.txt").read_text(encoding="utf-8")
    squeeze = lambda s: "".join(ch for ch in s if not ch.isspace())  # noqa: E731
    got, ref = squeeze(got), squeeze(ref)
    matcher = difflib.SequenceMatcher(None, ref, got, autojunk=False)
    matched = sum(b.size for b in matcher.get_matching_blocks())
    print(f"pages {len(sections)}; reference {len(ref)} characters; extracted {len(got)}; "
          f"recovered in order {matched} ({matched / len(ref):.2%})")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    if "--recovery" in sys.argv:
        recovery(out)
        return
    ja = articles("ja")
    en = articles("en")
    both = [d for pair in zip(ja, en) for d in pair]
    many = both * 8
    (out / "guide.md").write_text(markdown(many), encoding="utf-8")
    (out / "guide.html").write_text(html_page(many), encoding="utf-8")
    (out / "articles.csv").write_text(csv_rows(many), encoding="utf-8")
    (out / "notes.txt").write_text("\n\n".join(t for _, t in many), encoding="utf-8")
    (out / "guides.docx").write_bytes(docx(both * 2))
    (out / "articles.xlsx").write_bytes(xlsx(both * 2))
    if "--pdf" in sys.argv:
        pdf(ja, out)
    for path in sorted(out.iterdir()):
        print(f"{path.name:>28} {path.stat().st_size:>10} bytes")


if __name__ == "__main__":
    main()
