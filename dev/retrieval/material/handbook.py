"""Adds the long handbook and administration guide chapters of both languages.

The English handbook is published chapter by chapter; the Japanese one in fewer, longer parts
(JA_PARTS), each joining the chapters listed."""

from . import handbook_en, handbook_ja

FILE = {"en": "handbook-en.json", "ja": "handbook-ja.json"}

JA_PARTS = {
    "it-1": ("ITハンドブック 第1部：機器とアカウント", ["it-devices", "it-accounts"]),
    "it-2": ("ITハンドブック 第2部：リモートワークとセキュリティ", ["it-remote", "it-security"]),
    "hr-1": ("人事ハンドブック：勤務時間・出張・経費", ["hr-hours", "hr-travel"]),
    "hr-onboarding": ("人事ハンドブック：入社後の1週間", ["hr-onboarding"]),
    "admin-1": ("ツムギ管理者ガイド：就業ルール・月次締め・承認ルート", ["admin-workrules", "admin-approvals"]),
    "admin-payroll": ("ツムギ管理者ガイド：給与データ出力", ["admin-payroll"]),
}


def ja_part(chapter):
    """The id of the Japanese document holding an English chapter's content."""
    for part, (_, chapters) in JA_PARTS.items():
        if chapter in chapters:
            return f"ja-hb-{part}"
    raise KeyError(chapter)


def build(c):
    for key, (title, area, sections) in handbook_en.CHAPTERS.items():
        text = "\n\n".join(f"{h}.\n{body}" for h, body in sections)
        category = "admin-guide" if area == "admin" else "handbook"
        product = "tsumugi" if area == "admin" else None
        c.add(FILE["en"], "en", "hb", key, title, text, category=category, product=product,
              section=area)
    for part, (title, chapters) in JA_PARTS.items():
        blocks = []
        for ch in chapters:
            ch_title, sections = handbook_ja.CHAPTERS[ch]
            body = "\n\n".join(f"■{h}\n{b}" for h, b in sections)
            blocks.append(body if len(chapters) == 1 else f"【{ch_title.split('：', 1)[1]}】\n\n{body}")
        area = handbook_en.CHAPTERS[chapters[0]][1]
        category = "admin-guide" if area == "admin" else "handbook"
        product = "tsumugi" if area == "admin" else None
        c.add(FILE["ja"], "ja", "hb", part, title, "\n\n".join(blocks), category=category,
              product=product, section=area)
