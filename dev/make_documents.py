#!/usr/bin/env python3
"""Writes the document fixtures under dev/samples/documents/ (Python's standard library only).

Run from the repository root: `python3 dev/make_documents.py`. The output is byte-for-byte the
same on every run (fixed zip timestamps, fixed PDF ids), so the committed files can be checked
against it: `python3 dev/make_documents.py --check`.

What each file is for (the tests in `shared/src/documents/` read them):

- manual-ja.md: a Markdown manual, Japanese and English, headings nested three deep.
- page.html: an HTML page whose nav, script, style and noscript must be dropped.
- notes.txt / notes-utf16.txt: plain text in paragraphs, UTF-8 and UTF-16LE with a BOM.
- prices.csv: a Japanese price list (a quoted field with a comma and a line break).
- workbook.xlsx: two sheets (商品, 在庫), shared and inline strings, a number, a date.
- report.docx: Title / Heading 1 / Heading 2 (Japanese Word's numeric style ids) and a table.
- manual.pdf: four pages: English in Helvetica; Japanese in a Type0 font (Identity-H) with a
  ToUnicode CMap; Japanese in a predefined CMap (UniJIS-UCS2-H) without one; a blank page.
- hostile/: an encrypted PDF (user password), an image-only PDF, a truncated .docx, a zip
  bomb (.docx, honest sizes), a zip bomb whose headers understate the sizes (.xlsx), a zip
  with many entries, and a .pdf whose bytes are a zip.
"""

import hashlib
import io
import struct
import sys
import zipfile
import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parent / "samples" / "documents"
FIXED_TIME = (2024, 4, 1, 9, 0, 0)


# ------------------------------------------------------------------------------ text formats

MANUAL_MD = """\
# 導入ガイド

sakuin は S3 の文書を検索できるようにします。この手引きは導入の手順をまとめたものです。

## 1. 準備

AWS アカウントと Elasticsearch クラスタが必要です。

### 1.1 権限

IAM ロールには S3 の読み取り権限が要ります。

- s3:GetObject
- s3:ListBucket

## 2. Installation

Run the following command:

```sh
sam deploy --guided
```

### 2.1 Network

The functions run in private subnets that reach the cluster over VPN.

| 項目 | 値 |
|---|---|
| ポート | 9200 |
| TLS | 必須 |

# 付録

よくある質問は FAQ を参照してください。
"""

PAGE_HTML = """\
<!DOCTYPE html>
<html lang="ja">
<head>
<meta charset="utf-8">
<title>製品案内 | Example</title>
<style>body { font-family: sans-serif; } h1::after { content: "style text"; }</style>
<script>var secret = "script text"; if (a < b && c > d) { document.write("<p>written</p>"); }</script>
</head>
<body>
<nav><ul><li><a href="/">ホーム</a></li><li><a href="/faq">FAQ nav text</a></li></ul></nav>
<main>
<h1>製品案内</h1>
<p>当社の検索サービスは &amp; 文書を&nbsp;すばやく探します。&lt;高速&gt; &#x2764; &#12354;</p>
<h2>料金</h2>
<p>基本料金は月額<b>1,000円</b>です。</p>
<table>
<tr><th>プラン</th><th>月額</th></tr>
<tr><td>Basic</td><td>1,000円</td></tr>
<tr><td>Pro</td><td>5,000円</td></tr>
</table>
<h3>割引</h3>
<p>年払いは10%引き。<br>学生は半額。</p>
<noscript>noscript text</noscript>
<h2>Support</h2>
<ul><li>Email</li><li>Phone</li></ul>
</main>
<script type="application/ld+json">{"@type": "Product", "name": "json-ld text"}</script>
</body>
</html>
"""

NOTES_TXT = """\
社内メモ：検索基盤の移行について

旧システムは2025年3月で停止します。
新システムへの移行は段階的に行います。

First paragraph in English.
It has two lines.



Last paragraph after blank lines.
"""

PRICES_CSV = (
    "品番,品名,価格,説明\r\n"
    "A-001,ボールペン,120,黒インク\r\n"
    'A-002,ノート,250,"A5サイズ, 方眼"\r\n'
    'A-003,付箋,180,"75mm角\r\n4色パック"\r\n'
    "A-004,消しゴム,,\r\n"
)


# ------------------------------------------------------------------------------ zip helpers

def zip_bytes(entries, compress=zipfile.ZIP_DEFLATED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compress) as z:
        for name, data in entries:
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.compress_type = compress
            z.writestr(info, data)
    return buf.getvalue()


CONTENT_TYPES_XLSX = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>
<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>
<Override PartName="/xl/worksheets/sheet2.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>
<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>
<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>
</Types>"""

ROOT_RELS_XLSX = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>
</Relationships>"""

WORKBOOK_XML = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">
<sheets>
<sheet name="商品" sheetId="1" r:id="rId1"/>
<sheet name="在庫" sheetId="2" r:id="rId2"/>
</sheets>
</workbook>"""

WORKBOOK_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>
<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet2.xml"/>
<Relationship Id="rId3" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/>
<Relationship Id="rId4" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/>
</Relationships>"""

SHARED = ["品番", "品名", "価格", "ボールペン", "ノート", "倉庫", "数量", "入荷日", "東京", "大阪"]

# Style 1 is a date (built-in number format 14, yyyy/m/d).
STYLES_XML = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">
<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>
<fills count="1"><fill><patternFill patternType="none"/></fill></fills>
<borders count="1"><border/></borders>
<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>
<cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/><xf numFmtId="14" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/></cellXfs>
</styleSheet>"""


def shared_strings():
    items = "".join(f"<si><t>{s}</t></si>" for s in SHARED)
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
        f'count="{len(SHARED)}" uniqueCount="{len(SHARED)}">{items}</sst>'
    )


def sheet(rows):
    """rows: list of (row number, [(ref, kind, value, style)])."""
    out = []
    for r, cells in rows:
        cs = []
        for ref, kind, value, style in cells:
            s = f' s="{style}"' if style else ""
            if kind == "s":
                cs.append(f'<c r="{ref}" t="s"{s}><v>{SHARED.index(value)}</v></c>')
            elif kind == "inline":
                cs.append(f'<c r="{ref}" t="inlineStr"{s}><is><t>{value}</t></is></c>')
            else:
                cs.append(f'<c r="{ref}"{s}><v>{value}</v></c>')
        out.append(f'<row r="{r}">{"".join(cs)}</row>')
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        f'<sheetData>{"".join(out)}</sheetData></worksheet>'
    )


def workbook_xlsx():
    sheet1 = sheet([
        (1, [("A1", "s", "品番", 0), ("B1", "s", "品名", 0), ("C1", "s", "価格", 0)]),
        (2, [("A2", "inline", "A-001", 0), ("B2", "s", "ボールペン", 0), ("C2", "n", "120", 0)]),
        (3, [("A3", "inline", "A-002", 0), ("B3", "s", "ノート", 0), ("C3", "n", "250.5", 0)]),
    ])
    # The second sheet starts at row 2 (row 1 empty) and leaves a cell empty.
    sheet2 = sheet([
        (2, [("A2", "s", "倉庫", 0), ("B2", "s", "数量", 0), ("C2", "s", "入荷日", 0)]),
        (3, [("A3", "s", "東京", 0), ("B3", "n", "40", 0), ("C3", "n", "45383", 1)]),
        (5, [("A5", "s", "大阪", 0), ("C5", "n", "45384", 1)]),
    ])
    return zip_bytes([
        ("[Content_Types].xml", CONTENT_TYPES_XLSX),
        ("_rels/.rels", ROOT_RELS_XLSX),
        ("xl/workbook.xml", WORKBOOK_XML),
        ("xl/_rels/workbook.xml.rels", WORKBOOK_RELS),
        ("xl/sharedStrings.xml", shared_strings()),
        ("xl/styles.xml", STYLES_XML),
        ("xl/worksheets/sheet1.xml", sheet1),
        ("xl/worksheets/sheet2.xml", sheet2),
    ])


CONTENT_TYPES_DOCX = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>
<Override PartName="/word/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.styles+xml"/>
</Types>"""

ROOT_RELS_DOCX = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/>
</Relationships>"""

W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'

# Japanese Word names its heading styles with numeric ids ("1", "2"); the name says what they are.
STYLES_DOCX = f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:styles {W}>
<w:style w:type="paragraph" w:default="1" w:styleId="a"><w:name w:val="Normal"/></w:style>
<w:style w:type="paragraph" w:styleId="a3"><w:name w:val="Title"/></w:style>
<w:style w:type="paragraph" w:styleId="1"><w:name w:val="heading 1"/><w:pPr><w:outlineLvl w:val="0"/></w:pPr></w:style>
<w:style w:type="paragraph" w:styleId="2"><w:name w:val="heading 2"/><w:pPr><w:outlineLvl w:val="1"/></w:pPr></w:style>
<w:style w:type="paragraph" w:styleId="Heading3"><w:name w:val="heading 3"/></w:style>
</w:styles>"""


def para(text, style=None, runs=None):
    ppr = f'<w:pPr><w:pStyle w:val="{style}"/></w:pPr>' if style else ""
    body = runs if runs is not None else f"<w:r><w:t>{text}</w:t></w:r>"
    return f"<w:p>{ppr}{body}</w:p>"


def cell(text):
    return f'<w:tc><w:tcPr><w:tcW w:w="2000" w:type="dxa"/></w:tcPr>{para(text)}</w:tc>'


def document_docx():
    table = (
        "<w:tbl><w:tblPr/>"
        f"<w:tr>{cell('項目')}{cell('内容')}</w:tr>"
        f"<w:tr>{cell('対象')}{cell('全社員')}</w:tr>"
        f"<w:tr>{cell('期限')}{cell('6月末')}</w:tr>"
        "</w:tbl>"
    )
    split_runs = (
        '<w:r><w:t xml:space="preserve">移行は </w:t></w:r>'
        '<w:r><w:rPr><w:b/></w:rPr><w:t>三段階</w:t></w:r>'
        "<w:r><w:t>で行います。</w:t></w:r><w:r><w:tab/><w:t>(予定)</w:t></w:r>"
        '<w:del><w:r><w:delText>削除された文</w:delText></w:r></w:del>'
        '<w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText>PAGE</w:instrText></w:r>'
    )
    body = "".join([
        para("年次報告書", "a3"),
        para("この文書は社内向けです。"),
        para("1. 概要", "1"),
        para("", runs=split_runs),
        para("1.1 スケジュール", "2"),
        para("次の表のとおりです。"),
        table,
        para("2. Results", "1"),
        para("Outline level set on the paragraph itself:", None),
        '<w:p><w:pPr><w:outlineLvl w:val="1"/></w:pPr><w:r><w:t>2.1 Direct outline</w:t></w:r></w:p>',
        para("Line one", runs="<w:r><w:t>Line one</w:t><w:br/><w:t>Line two</w:t></w:r>"),
        para("2.1.1 Third level", "Heading3"),
        para("Deep text."),
    ])
    document = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f"<w:document {W}><w:body>{body}<w:sectPr/></w:body></w:document>"
    )
    return zip_bytes([
        ("[Content_Types].xml", CONTENT_TYPES_DOCX),
        ("_rels/.rels", ROOT_RELS_DOCX),
        ("word/document.xml", document),
        ("word/styles.xml", STYLES_DOCX),
    ])


def docx_with_document(document_xml):
    return zip_bytes([
        ("[Content_Types].xml", CONTENT_TYPES_DOCX),
        ("_rels/.rels", ROOT_RELS_DOCX),
        ("word/document.xml", document_xml),
    ])


def zip_bomb_docx():
    """A .docx whose document.xml inflates to 512 MiB of spaces; the headers say so."""
    size = 512 * 1024 * 1024
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = b" " * (1 << 20)
    data = b"".join(comp.compress(chunk) for _ in range(size >> 20)) + comp.flush()
    return raw_zip([("[Content_Types].xml", CONTENT_TYPES_DOCX.encode(), None),
                    ("word/document.xml", data, (size, zlib.crc32(b" " * size)))])


def raw_zip(entries, lie=None):
    """A zip written by hand, so a header can state sizes that are not true.

    entries: (name, stored-or-deflated data, None for stored / (size, crc) for deflated).
    lie: a size written for every deflated entry instead of its true size.
    """
    out = io.BytesIO()
    central = []
    for name, data, deflated in entries:
        name_b = name.encode()
        if deflated is None:
            method, size, crc = 0, len(data), zlib.crc32(data)
        else:
            method, (size, crc) = 8, deflated
            if lie is not None:
                size = lie
        offset = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0x4800, 0x5881,
                              crc, len(data), size, len(name_b), 0))
        out.write(name_b)
        out.write(data)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0x4800,
                                   0x5881, crc, len(data), size, len(name_b), 0, 0, 0, 0, 0,
                                   offset) + name_b)
    start = out.tell()
    for c in central:
        out.write(c)
    end = out.tell()
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central),
                          end - start, start, 0))
    return out.getvalue()


def lying_bomb_xlsx():
    """An .xlsx whose sheet inflates to 256 MiB while its headers claim 1 KiB."""
    size = 256 * 1024 * 1024
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = b"<row/>" * ((1 << 20) // 6) + b"<row/"[: (1 << 20) % 6]
    chunk = chunk[: 1 << 20]
    data = b"".join(comp.compress(chunk) for _ in range(size >> 20)) + comp.flush()
    crc = 0
    for _ in range(size >> 20):
        crc = zlib.crc32(chunk, crc)
    stored = [(n, d.encode(), None) for n, d in [
        ("[Content_Types].xml", CONTENT_TYPES_XLSX),
        ("_rels/.rels", ROOT_RELS_XLSX),
        ("xl/workbook.xml", WORKBOOK_XML),
        ("xl/_rels/workbook.xml.rels", WORKBOOK_RELS),
    ]]
    return raw_zip(stored + [("xl/worksheets/sheet1.xml", data, (size, crc))], lie=1024)


def many_entries_zip(count):
    return zip_bytes([("[Content_Types].xml", CONTENT_TYPES_DOCX),
                      ("word/document.xml", "<w:document/>")]
                     + [(f"word/media/e{i}.bin", "") for i in range(count)],
                     compress=zipfile.ZIP_STORED)


# ------------------------------------------------------------------------------ PDF

class Pdf:
    """A PDF written object by object, with a correct cross-reference table."""

    def __init__(self):
        self.objects = []

    def add(self, body):
        self.objects.append(body if isinstance(body, bytes) else body.encode("latin-1"))
        return len(self.objects)

    def reserve(self):
        self.objects.append(None)
        return len(self.objects)

    def set(self, num, body):
        self.objects[num - 1] = body if isinstance(body, bytes) else body.encode("latin-1")

    @staticmethod
    def stream(dictionary, data, compress=True):
        if compress:
            data = zlib.compress(data, 9)
            dictionary += " /Filter /FlateDecode"
        return (f"<< {dictionary} /Length {len(data)} >>\nstream\n".encode("latin-1") + data
                + b"\nendstream")

    def write(self, root, trailer_extra=""):
        out = io.BytesIO()
        out.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
        offsets = []
        for i, body in enumerate(self.objects, start=1):
            offsets.append(out.tell())
            out.write(f"{i} 0 obj\n".encode() + body + b"\nendobj\n")
        xref = out.tell()
        out.write(f"xref\n0 {len(self.objects) + 1}\n0000000000 65535 f \n".encode())
        for off in offsets:
            out.write(f"{off:010d} 00000 n \n".encode())
        out.write(f"trailer\n<< /Size {len(self.objects) + 1} /Root {root} 0 R "
                  f"/ID [<{FILE_ID}> <{FILE_ID}>] {trailer_extra}>>\n"
                  f"startxref\n{xref}\n%%EOF\n".encode())
        return out.getvalue()


FILE_ID = "5a6b7c8d9e0f11223344556677889900"


def to_unicode_cmap(mapping):
    """A ToUnicode CMap: 2-byte codes to UTF-16BE."""
    lines = [
        "/CIDInit /ProcSet findresource begin",
        "12 dict begin",
        "begincmap",
        "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def",
        "/CMapName /Adobe-Identity-UCS def",
        "/CMapType 2 def",
        "1 begincodespacerange",
        "<0000> <FFFF>",
        "endcodespacerange",
    ]
    items = sorted(mapping.items())
    for start in range(0, len(items), 100):
        part = items[start:start + 100]
        lines.append(f"{len(part)} beginbfchar")
        for code, ch in part:
            lines.append(f"<{code:04X}> <{ch.encode('utf-16-be').hex().upper()}>")
        lines.append("endbfchar")
    lines += ["endcmap", "CMapName currentdict /CMap defineresource pop", "end", "end"]
    return "\n".join(lines).encode("latin-1")


PDF_PAGE1 = [
    "Sakuin User Manual",
    "Chapter 1. Overview",
    "Documents in S3 become searchable.",
]
PDF_PAGE2 = ["第2章 インストール", "検索サービスを導入する手順です。", "「設定」を開いてください。"]
PDF_PAGE3 = ["第3章 ネットワーク", "ポート9200を開けます。"]


def pdf_string(text):
    return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def manual_pdf():
    pdf = Pdf()
    catalog = pdf.reserve()
    pages = pdf.reserve()
    helvetica = pdf.add("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica "
                        "/Encoding /WinAnsiEncoding >>")

    # Page 2's font: CIDs numbered in order of first use, mapped back by ToUnicode.
    cids = {}
    for line in PDF_PAGE2:
        for ch in line:
            cids.setdefault(ch, len(cids) + 1)
    to_unicode = pdf.add(pdf.stream("", to_unicode_cmap({cid: ch for ch, cid in cids.items()})))
    descriptor = pdf.add("<< /Type /FontDescriptor /FontName /GenShinGothic /Flags 4 "
                         "/FontBBox [0 -120 1000 880] /ItalicAngle 0 /Ascent 880 "
                         "/Descent -120 /CapHeight 700 /StemV 80 >>")
    cid_font = pdf.add("<< /Type /Font /Subtype /CIDFontType2 /BaseFont /GenShinGothic "
                       "/CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> "
                       f"/FontDescriptor {descriptor} 0 R /DW 1000 /CIDToGIDMap /Identity >>")
    type0 = pdf.add("<< /Type /Font /Subtype /Type0 /BaseFont /GenShinGothic /Encoding /Identity-H "
                    f"/DescendantFonts [{cid_font} 0 R] /ToUnicode {to_unicode} 0 R >>")

    # Page 3's font: a predefined CMap whose codes are UCS-2 (as Japanese PDF writers without
    # embedded fonts produce), no ToUnicode.
    heisei_desc = pdf.add("<< /Type /FontDescriptor /FontName /HeiseiMin-W3 /Flags 6 "
                          "/FontBBox [-123 -257 1001 910] /ItalicAngle 0 /Ascent 723 "
                          "/Descent -241 /CapHeight 709 /StemV 69 >>")
    heisei_cid = pdf.add("<< /Type /Font /Subtype /CIDFontType0 /BaseFont /HeiseiMin-W3 "
                         "/CIDSystemInfo << /Registry (Adobe) /Ordering (Japan1) /Supplement 2 >> "
                         f"/FontDescriptor {heisei_desc} 0 R /DW 1000 >>")
    heisei = pdf.add("<< /Type /Font /Subtype /Type0 /BaseFont /HeiseiMin-W3-UniJIS-UCS2-H "
                     f"/Encoding /UniJIS-UCS2-H /DescendantFonts [{heisei_cid} 0 R] >>")

    def page(content, fonts):
        stream = pdf.add(pdf.stream("", content.encode("latin-1")))
        font_dict = " ".join(f"/{name} {num} 0 R" for name, num in fonts)
        return pdf.add(f"<< /Type /Page /Parent {pages} 0 R /MediaBox [0 0 595 842] "
                       f"/Resources << /Font << {font_dict} >> >> /Contents {stream} 0 R >>")

    # Page 1: a title, then lines placed with Td; a TJ whose kerning hides a word space.
    c1 = ["BT /F1 18 Tf 72 770 Td " + pdf_string(PDF_PAGE1[0]) + " Tj ET",
          "BT /F1 12 Tf 72 730 Td " + pdf_string(PDF_PAGE1[1]) + " Tj",
          "0 -16 Td [(Documents in) -250 (S3 become) -250 (search) 20 (able.)] TJ ET"]
    p1 = page("\n".join(c1), [("F1", helvetica)])

    def hex_cids(text):
        return "<" + "".join(f"{cids[ch]:04X}" for ch in text) + ">"

    c2 = ["BT /F2 16 Tf 72 770 Td " + hex_cids(PDF_PAGE2[0]) + " Tj ET",
          "BT /F2 11 Tf 72 730 Td " + hex_cids(PDF_PAGE2[1]) + " Tj",
          "0 -14 Td " + hex_cids(PDF_PAGE2[2]) + " Tj ET"]
    p2 = page("\n".join(c2), [("F2", type0)])

    def ucs2(text):
        return "<" + text.encode("utf-16-be").hex().upper() + ">"

    c3 = ["BT /F3 16 Tf 1 0 0 1 72 770 Tm " + ucs2(PDF_PAGE3[0]) + " Tj",
          "1 0 0 1 72 740 Tm " + ucs2(PDF_PAGE3[1]) + " Tj ET"]
    p3 = page("\n".join(c3), [("F3", heisei)])
    p4 = page("", [])  # a blank page: no section, but the page numbers after it stay right

    pdf.set(pages, f"<< /Type /Pages /Kids [{p1} 0 R {p2} 0 R {p3} 0 R {p4} 0 R] /Count 4 >>")
    pdf.set(catalog, f"<< /Type /Catalog /Pages {pages} 0 R >>")
    return pdf.write(catalog)


def image_only_pdf():
    """One page that only paints an image, as a scanner writes it."""
    pdf = Pdf()
    catalog = pdf.reserve()
    pages = pdf.reserve()
    pixels = bytes((x * 16 + y) % 256 for y in range(16) for x in range(16))
    image = pdf.add(pdf.stream("/Type /XObject /Subtype /Image /Width 16 /Height 16 "
                               "/ColorSpace /DeviceGray /BitsPerComponent 8", pixels))
    content = pdf.add(pdf.stream("", b"q 500 0 0 700 48 70 cm /Im1 Do Q"))
    page = pdf.add(f"<< /Type /Page /Parent {pages} 0 R /MediaBox [0 0 595 842] "
                   f"/Resources << /XObject << /Im1 {image} 0 R >> >> /Contents {content} 0 R >>")
    pdf.set(pages, f"<< /Type /Pages /Kids [{page} 0 R] /Count 1 >>")
    pdf.set(catalog, f"<< /Type /Catalog /Pages {pages} 0 R >>")
    return pdf.write(catalog)


# The standard security handler, revision 3, RC4 128-bit (PDF 32000-1, 7.6.3).
PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def rc4(key, data):
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    i = j = 0
    out = bytearray()
    for byte in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def encrypted_pdf():
    user, owner, perms, length = b"secret", b"owner", -4, 16
    pad = lambda pw: (pw + PAD)[:32]  # noqa: E731
    digest = hashlib.md5(pad(owner)).digest()
    for _ in range(50):
        digest = hashlib.md5(digest).digest()
    o = rc4(digest[:length], pad(user))
    for i in range(1, 20):
        o = rc4(bytes(b ^ i for b in digest[:length]), o)
    file_id = bytes.fromhex(FILE_ID)
    key = hashlib.md5(pad(user) + o + struct.pack("<i", perms) + file_id).digest()
    for _ in range(50):
        key = hashlib.md5(key[:length]).digest()
    key = key[:length]
    u = rc4(key, hashlib.md5(PAD + file_id).digest())
    for i in range(1, 20):
        u = rc4(bytes(b ^ i for b in key), u)
    u += b"\x00" * 16

    def object_key(num):
        return hashlib.md5(key + struct.pack("<I", num)[:3] + b"\x00\x00").digest()[:min(length + 5, 16)]

    pdf = Pdf()
    catalog = pdf.reserve()
    pages = pdf.reserve()
    font = pdf.add("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    content_num = len(pdf.objects) + 1
    secret_text = b"BT /F1 12 Tf 72 770 Td (Confidential figures) Tj ET"
    content = pdf.add(pdf.stream("", rc4(object_key(content_num), secret_text), compress=False))
    page = pdf.add(f"<< /Type /Page /Parent {pages} 0 R /MediaBox [0 0 595 842] "
                   f"/Resources << /Font << /F1 {font} 0 R >> >> /Contents {content} 0 R >>")
    encrypt = pdf.add(f"<< /Filter /Standard /V 2 /R 3 /Length {length * 8} /P {perms} "
                      f"/O <{o.hex()}> /U <{u.hex()}> >>")
    pdf.set(pages, f"<< /Type /Pages /Kids [{page} 0 R] /Count 1 >>")
    pdf.set(catalog, f"<< /Type /Catalog /Pages {pages} 0 R >>")
    return pdf.write(catalog, f"/Encrypt {encrypt} 0 R ")


# ------------------------------------------------------------------------------ main

def fixtures():
    docx = document_docx()
    return {
        "manual-ja.md": MANUAL_MD.encode(),
        "page.html": PAGE_HTML.encode(),
        "notes.txt": NOTES_TXT.encode(),
        "notes-utf16.txt": b"\xff\xfe" + NOTES_TXT.replace("\n", "\r\n").encode("utf-16-le"),
        "prices.csv": PRICES_CSV.encode(),
        "workbook.xlsx": workbook_xlsx(),
        "report.docx": docx,
        "manual.pdf": manual_pdf(),
        "hostile/encrypted.pdf": encrypted_pdf(),
        "hostile/image-only.pdf": image_only_pdf(),
        "hostile/truncated.docx": docx[: len(docx) // 2],
        "hostile/bomb.docx": zip_bomb_docx(),
        "hostile/bomb-lying.xlsx": lying_bomb_xlsx(),
        "hostile/many-entries.docx": many_entries_zip(300),
        "hostile/zip-named.pdf": docx,
        "hostile/shift_jis.csv": "品番,品名\r\nA-001,ボールペン\r\n".encode("cp932"),
        "hostile/bad-xml.docx": docx_with_document(f"<w:document {W}><w:body><w:p></w:body></w:document>"),
    }


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, data in fixtures().items():
        path = OUT / name
        if check:
            if not path.exists() or path.read_bytes() != data:
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"{len(data):>9} {path.relative_to(OUT.parent.parent.parent)}")
    if stale:
        sys.exit(f"out of date (run python3 dev/make_documents.py): {', '.join(stale)}")


if __name__ == "__main__":
    main()
