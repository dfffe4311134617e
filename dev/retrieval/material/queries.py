"""The queries and their judgments.

Each query names the documents that answer it (grade 2), those that answer part of it or answer
it in the other language (grade 1), and, where the set holds one, the near-duplicate or
distractor that looks like an answer but is not (grade 0). ``ev`` holds phrases of the answer:
build.py checks that every grade-2 document contains one of them and lists every other document
that does, so that a label missed when the material changes shows up.

Kinds: keyword (a few terms), question (a natural-language question sharing the answer's
words), paraphrase (a question in other words than the answer's), cross-lang (the answer exists
only in the other language), deep (the answer is a passage in the middle or at the end of a long
document), near-dup (a near-duplicate of the answer is in the set: another office, model,
firmware line, platform, plan, country or date).
"""

from .handbook import ja_part

HB_IT1, HB_IT2, HB_HR1 = ja_part("it-devices"), ja_part("it-remote"), ja_part("hr-hours")
HB_ADMIN1 = ja_part("admin-workrules")


def T(key):
    """Both language versions of a document key: (English id, Japanese id)."""
    return f"en-{key}", f"ja-{key}"


# id, lang, kind, text, grade 2, grade 1, grade 0 (traps), evidence
QUERIES = [
    # ---- keyword ----------------------------------------------------------------------
    ("q001", "en", "keyword", "TS-2001 error", ["en-err-ts-2001"], ["ja-err-ts-2001", "en-forum-tsumugi-geofence-indoor"], [], ["TS-2001"]),
    ("q002", "en", "keyword", "KG-510 fan module replacement", ["en-guide-kg-510"], ["ja-guide-kg-510", "en-acc-ka-fan5", "en-err-e501", "en-spec-kg-510", "en-news-gate-510-launch"], [], ["fan module"]),
    ("q003", "en", "keyword", "E302 APN", ["en-err-e302"], ["ja-err-e302"], [], ["APN"]),
    ("q004", "en", "keyword", "PoE budget KG-210", ["en-guide-kg-210"], ["ja-guide-kg-210", "en-cli-show-poe", "en-forum-gate-poe-camera", "en-spec-kg-210"], [], ["60 W"]),
    ("q005", "en", "keyword", "Tsumugi 6.4 release notes", ["en-rel-tsumugi-6.4"], ["ja-rel-tsumugi-6.4"], ["en-rel-tsumugi-6.3", "en-rel-tsumugi-6.5"], ["Tsumugi 6.4"]),
    ("q006", "en", "keyword", "API rate limit 429", ["en-faq-api-limit"], ["ja-faq-api-limit"], [], ["429"]),
    ("q007", "en", "keyword", "show vpn sa", ["en-cli-show-vpn-sa"], ["ja-cli-show-vpn-sa", "en-cli-clear-vpn-sa"], [], ["security associations"]),
    ("q008", "en", "keyword", "Vaultline password manager", ["en-hb-it-accounts", "en-sw-vaultline"], [HB_IT1, "ja-sw-vaultline"], [], ["Vaultline"]),
    ("q009", "en", "keyword", "KA-USB4 compatible models", ["en-acc-ka-usb4"], ["ja-acc-ka-usb4", "en-rel-gate-3.2.0", "en-faq-gate-sim"], [], ["KG-110, KG-210, KG-510"]),
    ("q010", "en", "keyword", "SCIM provisioning plan", ["en-faq-sso"], ["ja-faq-sso", "en-gl-scim"], [], ["SCIM"]),
    ("q011", "en", "keyword", "webhook signature HMAC-SHA256", ["en-api-post-webhooks", "en-rel-tsumugi-6.1"], ["ja-api-post-webhooks", "ja-rel-tsumugi-6.1", "en-forum-tsumugi-webhook-signature", "en-gl-webhook"], [], ["HMAC-SHA256"]),
    ("q012", "en", "keyword", "ISO 27001 certificate validity", ["en-news-iso27001"], ["ja-news-iso27001"], [], ["June 2027"]),
    ("q013", "en", "keyword", "Grammarly allowed", ["en-sw-grammarly"], ["ja-sw-grammarly"], [], ["not approved"]),
    ("q014", "en", "keyword", "Hokuto Logistics LTE failover results", ["en-case-hokuto-logistics"], ["ja-case-hokuto-logistics"], [], ["37 line failures"]),
    ("q015", "ja", "keyword", "TS-5001", ["ja-err-ts-5001"], ["en-err-ts-5001", "ja-hb-admin-payroll"], ["ja-err-ts-5002"], ["TS-5001"]),
    ("q016", "ja", "keyword", "KG-310 SIM 挿入", ["ja-guide-kg-310", "ja-faq-gate-sim"], ["en-guide-kg-310", "en-faq-gate-sim", "ja-err-e301", "ja-spec-kg-310"], [], ["SIM"]),
    ("q017", "ja", "keyword", "キリコゲートクラウド 2年目 契約", ["ja-faq-gate-cloud"], ["en-faq-gate-cloud"], [], ["2年目以降"]),
    ("q018", "ja", "keyword", "ツムギ 6.7 リリースノート", ["ja-rel-tsumugi-6.7"], ["en-rel-tsumugi-6.7"], ["ja-rel-tsumugi-6.6", "ja-rel-tsumugi-6.8"], ["ツムギ 6.7"]),
    ("q019", "ja", "keyword", "監査ログ 保存期間", ["ja-faq-audit-log"], ["en-faq-audit-log", "ja-rel-tsumugi-6.5", "ja-api-get-audit-events", "ja-plan-business"], [], ["2年間"]),
    ("q020", "ja", "keyword", "show lte コマンド", ["ja-cli-show-lte"], ["en-cli-show-lte"], [], ["show lte"]),
    ("q021", "ja", "keyword", "日当 バンコク", ["ja-perdiem-bangkok"], ["en-perdiem-bangkok"], [], ["6,000円"]),
    ("q022", "ja", "keyword", "SEC-101 情報セキュリティ研修", ["ja-course-sec-101"], ["en-course-sec-101", "ja-hb-hr-onboarding"], [], ["SEC-101"]),
    ("q023", "ja", "keyword", "E601 NTP 時刻", ["ja-err-e601"], ["en-err-e601", "ja-rel-gate-3.3.0", "ja-pm-2025-07-22-gate-cloud", "ja-cli-show-cloud"], [], ["E601"]),
    ("q024", "ja", "keyword", "Kiriko-Guest パスワード", ["ja-staff-wifi-guest"], ["en-staff-wifi-guest", "ja-staff-wifi-staff"], [], ["Kiriko-Guest"]),
    ("q025", "ja", "keyword", "APIバージョン1 停止日", ["ja-news-api-v1-off", "ja-rel-tsumugi-6.0"], ["en-news-api-v1-off", "en-rel-tsumugi-6.0"], [], ["2025年3月31日"]),
    ("q026", "ja", "keyword", "ツムギ ビジネスプラン 月額料金 改定", ["ja-news-price-2025"], ["en-news-price-2025"], ["ja-plan-business"], ["650円"]),
    # ---- question ---------------------------------------------------------------------
    ("q027", "en", "question", "How long is the Tsumugi password reset link valid?", ["en-faq-pwreset"], ["ja-faq-pwreset"], ["en-proc-password-recovery-3x", "en-hb-it-accounts"], ["30 minutes"]),
    ("q028", "en", "question", "How many users can we add during the free trial?", ["en-faq-trial"], ["ja-faq-trial"], [], ["50 users"]),
    ("q029", "en", "question", "When are leave balances recalculated?", ["en-faq-balance-update"], ["ja-faq-balance-update", "en-err-ts-3001"], [], ["2:00"]),
    ("q030", "en", "question", "On how many phones can one Tsumugi account be signed in at the same time?", ["en-faq-devices"], ["ja-faq-devices"], [], ["three phones"]),
    ("q031", "en", "question", "What is the hotel limit per night for a business trip to Nagoya?", ["en-hb-hr-travel"], [HB_HR1], ["en-perdiem-austin"], ["Tokyo, Osaka and Nagoya"]),
    ("q032", "en", "question", "How long is a Tsumugi API token valid?", ["en-err-ts-7001"], ["ja-err-ts-7001", "en-rel-tsumugi-6.7"], [], ["90 days"]),
    ("q033", "en", "question", "Which payment methods are available for annual plans?", ["en-faq-payment"], ["ja-faq-payment"], [], ["bank transfer"]),
    ("q034", "en", "question", "On which day of the month is salary paid?", ["en-staff-pay-day", "en-team-payroll"], ["ja-staff-pay-day"], ["en-staff-expense-pay", "en-team-finance"], ["25th"]),
    ("q035", "en", "question", "Can I take my company laptop with me when I work abroad?", ["en-hb-it-remote"], [HB_IT2], [], ["abroad"]),
    ("q036", "en", "question", "What happens to waiting requests when their approver is deactivated?", ["en-hb-admin-approvals", "en-forum-tsumugi-approver-left"], [HB_ADMIN1, "ja-forum-tsumugi-approver-left"], [], ["three days"]),
    ("q037", "en", "question", "How many IPsec tunnels does the KG-210 support?", ["en-spec-kg-210"], ["ja-spec-kg-210"], ["en-spec-kg-310", "en-spec-kg-110"], ["up to 50"]),
    ("q038", "en", "question", "Which exchange rate is used for expenses paid in a foreign currency?", ["en-faq-fx-rate"], ["ja-faq-fx-rate"], [], ["reference rate"]),
    ("q039", "en", "question", "How do I return a faulty Kiriko Gate for repair?", ["en-faq-gate-rma"], ["ja-faq-gate-rma", "en-gl-rma", "en-team-field-eng"], [], ["RMA number"]),
    ("q040", "en", "question", "Where are the Kiriko Gate field engineers based?", ["en-team-field-eng", "en-office-nagoya"], ["ja-team-field-eng", "ja-office-nagoya", "en-closure-nagoya"], [], ["field engineers"]),
    ("q041", "en", "question", "What is the minimum length of a company password?", ["en-hb-it-accounts"], [HB_IT1], ["en-faq-pwreset"], ["14 characters"]),
    ("q042", "en", "question", "Can Tsumugi list the employees who have not yet taken five days of paid leave?", ["en-rel-tsumugi-6.7"], ["ja-rel-tsumugi-6.7", "ja-faq-five-days"], [], ["five days"]),
    ("q043", "ja", "question", "ツムギのパスワード再設定リンクの有効期限は？", ["ja-faq-pwreset"], ["en-faq-pwreset"], ["ja-proc-password-recovery-3x"], ["30分"]),
    ("q044", "ja", "question", "請求書は何か月分までダウンロードできますか", ["ja-faq-invoices"], ["en-faq-invoices"], [], ["24か月"]),
    ("q045", "ja", "question", "プランを途中でダウングレードするといつ反映されますか", ["ja-faq-plan-change"], ["en-faq-plan-change"], [], ["次回更新時"]),
    ("q046", "ja", "question", "残業時間の上限は月何時間ですか", [HB_HR1, "ja-faq-36-agreement"], ["en-hb-hr-hours", "ja-faq-overtime-alert"], [], ["月45時間"]),
    ("q047", "ja", "question", "承認された経費はいつ振り込まれますか", ["ja-staff-expense-pay", "ja-team-finance"], ["en-staff-expense-pay"], ["ja-staff-pay-day"], ["10日と25日"]),
    ("q048", "ja", "question", "社員証をなくしたらどうすればいいですか", ["ja-staff-lost-card"], ["en-staff-lost-card"], [], ["1,000円"]),
    ("q049", "ja", "question", "KG-510の保証期間は何年ですか", ["ja-faq-gate-warranty", "ja-guide-kg-510"], ["en-faq-gate-warranty", "en-guide-kg-510"], ["ja-guide-kg-210", "ja-guide-kg-310"], ["3年"]),
    ("q050", "ja", "question", "Webhookの呼び出しが失敗したら何回再送されますか", ["ja-api-post-webhooks", "ja-rel-tsumugi-6.1"], ["en-api-post-webhooks", "en-rel-tsumugi-6.1"], [], ["5回"]),
    ("q051", "ja", "question", "深夜労働は何時から何時までですか", [HB_HR1, "ja-gl-late-night"], ["en-hb-hr-hours", "en-gl-late-night"], [], ["22:00～5:00", "22:00から5:00"]),
    ("q052", "ja", "question", "顧客を接待するときの1人あたりの上限額は？", [HB_HR1], ["en-hb-hr-travel", "ja-err-ts-4003"], [], ["10,000円"]),
    ("q053", "ja", "question", "面接に使う会議室はどこですか", ["ja-room-sagi", "ja-team-talent"], ["en-room-sagi", "en-team-talent"], [], ["面接"]),
    # ---- paraphrase -------------------------------------------------------------------
    ("q054", "en", "paraphrase", "my phone had no reception when I got to work, will my arrival time still be recorded correctly?", ["en-faq-offline-punch"], ["ja-faq-offline-punch", "en-err-ts-2010", "en-rel-tsumugi-6.0"], [], ["72 hours"]),
    ("q055", "en", "paraphrase", "does the attendance app follow where I go during the day", ["en-faq-location"], ["ja-faq-location"], [], ["does not follow you"]),
    ("q056", "en", "paraphrase", "I typed my credentials into a fake login site, what should I do now", ["en-hb-it-security"], [HB_IT2, "en-hb-it-accounts"], [], ["change your password at once"]),
    ("q057", "en", "paraphrase", "let a colleague sign off my team's requests while I'm on holiday", ["en-faq-delegate"], ["ja-faq-delegate", "en-hb-admin-approvals", "en-gl-delegate"], [], ["Delegation"]),
    ("q058", "en", "paraphrase", "the gateway keeps burning through our mobile data even though the fibre is fine", ["en-forum-gate-lte-data-used"], ["ja-forum-gate-lte-data-used", "en-proc-lte-failover-3x", "en-rel-gate-3.3.0"], [], ["health check target"]),
    ("q059", "en", "paraphrase", "does my working day end when I walk out of the building?", ["en-hb-hr-hours"], [HB_HR1], [], ["not when you leave the building"]),
    ("q060", "en", "paraphrase", "the network box in our branch is overheating", ["en-err-e501"], ["ja-err-e501", "en-cli-show-environment"], [], ["70 °C"]),
    ("q061", "en", "paraphrase", "workers at a shop record their arrival on one shared tablet by the door", ["en-faq-kiosk", "en-gl-kiosk"], ["ja-faq-kiosk", "ja-gl-kiosk", "en-case-maruyama-foods"], [], ["kiosk"]),
    ("q062", "en", "paraphrase", "will I get my money back for a screen I bought myself for my home desk", ["en-hb-it-devices"], [HB_IT1, "en-staff-monitor-home"], [], ["not reimbursed"]),
    ("q063", "en", "paraphrase", "who looks after a new starter and answers their everyday questions", ["en-hb-hr-onboarding"], ["ja-hb-hr-onboarding", "en-team-talent"], [], ["buddy"]),
    ("q064", "en", "paraphrase", "the app gets the numbers wrong on faded till slips", ["en-forum-tsumugi-receipt-blurry"], ["ja-forum-tsumugi-receipt-blurry", "en-faq-receipt-ocr"], [], ["thermal"]),
    ("q065", "en", "paraphrase", "names turned into gibberish after uploading our staff spreadsheet", ["en-forum-tsumugi-csv-garbled", "en-err-ts-6001"], ["ja-forum-tsumugi-csv-garbled", "ja-err-ts-6001"], [], ["CSV UTF-8"]),
    ("q066", "en", "paraphrase", "people on the top floors of our tower can't clock in because the app thinks they are somewhere else", ["en-forum-tsumugi-geofence-indoor"], ["ja-forum-tsumugi-geofence-indoor", "en-err-ts-2001"], [], ["radius"]),
    ("q067", "en", "paraphrase", "is there extra money for tea and lunch when I travel far for work", ["en-hb-hr-travel"], [HB_HR1, "en-gl-per-diem"], [], ["daily allowance"]),
    ("q068", "en", "paraphrase", "unused permissions get removed by themselves after a while?", ["en-hb-it-accounts"], [HB_IT1], [], ["90 days"]),
    ("q069", "ja", "paraphrase", "電車の中で会社のパソコンを開いて仕事してもいい？", [HB_IT2], ["en-hb-it-remote"], [], ["電車内"]),
    ("q070", "ja", "paraphrase", "出勤ボタンをうっかり2回押してしまった", ["ja-err-ts-2002"], ["en-err-ts-2002"], [], ["2回押した"]),
    ("q071", "ja", "paraphrase", "上司が休みの間、誰が申請をOKしてくれる？", ["ja-faq-delegate"], ["en-faq-delegate", "ja-gl-delegate", HB_ADMIN1], [], ["代理"]),
    ("q072", "ja", "paraphrase", "子育て中なので毎日早めに帰りたい", [HB_HR1], ["en-hb-hr-hours"], [], ["短時間勤務"]),
    ("q073", "ja", "paraphrase", "ルーターの管理者パスワードがわからなくなった", ["ja-proc-password-recovery-3x", "ja-proc-password-recovery-2x"], ["en-proc-password-recovery-3x", "en-proc-password-recovery-2x", "ja-rel-gate-3.0.0"], ["ja-faq-pwreset", HB_IT2], ["管理者パスワード"]),
    ("q074", "ja", "paraphrase", "機種変更したらサインインの確認アプリが使えなくなった", [HB_IT1], ["en-hb-it-accounts", "ja-faq-2fa"], [], ["機種変更"]),
    ("q075", "ja", "paraphrase", "支店の通信機器を買ったときの状態に戻したい", ["ja-proc-factory-reset-2x", "ja-proc-factory-reset-3x"], ["en-proc-factory-reset-2x", "en-proc-factory-reset-3x"], [], ["工場出荷時"]),
    ("q076", "ja", "paraphrase", "倉庫の入口のタブレットが毎朝だけつながらない", ["ja-forum-tsumugi-kiosk-offline"], ["en-forum-tsumugi-kiosk-offline"], [], ["スリープ"]),
    ("q077", "ja", "paraphrase", "使っていない権限は放っておくと消える？", [HB_IT1], ["en-hb-it-accounts"], [], ["90日間"]),
    ("q078", "ja", "paraphrase", "ケベックの社員向けにフランス語の画面はある？", ["ja-faq-languages"], ["en-faq-french", "en-faq-languages", "ja-rel-tsumugi-6.4", "ja-team-localisation"], [], ["カナダフランス語"]),
    ("q079", "ja", "paraphrase", "給料計算ソフトに勤怠の数字を渡すとき、古いソフトで文字化けしない形式にしたい", ["ja-hb-admin-payroll"], ["en-hb-admin-payroll"], ["ja-err-ts-6001", "ja-forum-tsumugi-csv-garbled"], ["Shift_JIS"]),
    ("q080", "ja", "paraphrase", "日中の勤怠と夜の分が2日に分かれてしまう夜勤", ["ja-forum-tsumugi-night-shift-date"], ["en-forum-tsumugi-night-shift-date"], [], ["5:00"]),
    # ---- cross-language -----------------------------------------------------------------
    ("q081", "en", "cross-lang", "deadline for year-end tax adjustment documents", ["ja-staff-nencho"], [], [], ["11月20日"]),
    ("q082", "en", "cross-lang", "When is the resident tax notice published?", ["ja-staff-juminzei"], [], [], ["住民税"]),
    ("q083", "en", "cross-lang", "How do I add my spouse to the health insurance as a dependant?", ["ja-staff-fuyo"], [], [], ["扶養"]),
    ("q084", "en", "cross-lang", "Can Tsumugi store employees' My Number?", ["ja-faq-mynumber"], [], [], ["マイナンバー"]),
    ("q085", "en", "cross-lang", "What is Kiriko Systems' qualified invoice issuer registration number?", ["ja-faq-invoice-number"], [], [], ["T8010401234567"]),
    ("q086", "en", "cross-lang", "Do we have to keep the original paper receipts after uploading photos?", ["ja-faq-paper-receipt"], [], [], ["原本"]),
    ("q087", "ja", "cross-lang", "401(k)の会社のマッチング率は？", ["en-staff-401k"], [], [], ["401(k)"]),
    ("q088", "ja", "cross-lang", "英国の企業年金の会社拠出率", ["en-staff-pension-uk"], [], [], ["workplace pension"]),
    ("q089", "ja", "cross-lang", "米国の新入社員がI-9の書類を提出する期限", ["en-staff-i9"], [], [], ["I-9"]),
    ("q090", "ja", "cross-lang", "GDPRのデータ処理契約（DPA）は締結できますか", ["en-faq-gdpr"], [], [], ["data processing agreement"]),
    ("q091", "ja", "cross-lang", "英国やEUの顧客の請求書にVATは記載されますか", ["en-faq-vat"], [], [], ["VAT"]),
    ("q092", "ja", "cross-lang", "米国の顧客の売上税の免税証明書はどこで提出しますか", ["en-faq-sales-tax"], [], [], ["exemption certificates"]),
    # ---- deep (passage inside a long document) ----------------------------------------------
    ("q093", "en", "deep", "Can I send a laptop with a swollen battery by air mail?", ["en-hb-it-devices"], [HB_IT1], [], ["by air"]),
    ("q094", "en", "deep", "How long is a leaver's mailbox kept?", ["en-hb-it-accounts"], [HB_IT1], [], ["90 days"]),
    ("q095", "en", "deep", "After how many hours does the VPN session end?", ["en-hb-it-remote"], [HB_IT2], [], ["12 hours"]),
    ("q096", "en", "deep", "When is the preliminary report to the Personal Information Protection Commission due?", ["en-hb-it-security"], [HB_IT2], [], ["three to five days"]),
    ("q097", "en", "deep", "What are the usual hours for parents working shorter days?", ["en-hb-hr-hours"], [HB_HR1], [], ["9:30 to 16:30"]),
    ("q098", "en", "deep", "Who has to approve an expense claim submitted more than 60 days late?", ["en-hb-hr-travel"], [HB_HR1], [], ["chief financial officer"]),
    ("q099", "en", "deep", "On which day after joining is the staff card ready?", ["en-hb-hr-onboarding"], ["ja-hb-hr-onboarding"], [], ["third day"]),
    ("q100", "en", "deep", "Does a new closing day apply to the current period?", ["en-hb-admin-workrules"], [HB_ADMIN1], [], ["next period"]),
    ("q101", "en", "deep", "How long are past payroll exports kept?", ["en-hb-admin-payroll"], ["ja-hb-admin-payroll"], [], ["13 months"]),
    ("q102", "en", "deep", "What is the mail cut-off time at the Osaka office?", ["en-office-osaka"], ["ja-office-osaka"], ["en-office-tokyo", "en-office-nagoya", "en-office-sendai"], ["15:30"]),
    ("q103", "en", "deep", "Where is the evacuation assembly point of the Sapporo office?", ["en-office-sapporo"], ["ja-office-sapporo", "en-closure-sapporo"], ["en-office-sendai"], ["Odori Park"]),
    ("q104", "en", "deep", "How long can a KG-510 run without a fan while the fan module is replaced?", ["en-guide-kg-510"], ["ja-guide-kg-510", "en-err-e501"], [], ["two minutes"]),
    ("q105", "en", "deep", "Which LTE bands does the KG-310 modem support?", ["en-guide-kg-310"], ["ja-guide-kg-310"], [], ["bands 1, 3, 8"]),
    ("q106", "en", "deep", "What caused the delayed punches on 5 November 2024?", ["en-pm-2024-11-05-punch-delay"], ["ja-pm-2024-11-05-punch-delay"], [], ["fault in the storage controller's firmware"]),
    ("q107", "en", "deep", "Why had the certificate renewal job been failing before the single sign-on outage?", ["en-pm-2025-03-03-sso"], ["ja-pm-2025-03-03-sso"], [], ["DNS provider"]),
    ("q108", "en", "deep", "What time-to-live do the Kiriko Gate Cloud endpoint DNS records have now?", ["en-pm-2025-07-22-gate-cloud"], ["ja-pm-2025-07-22-gate-cloud"], [], ["five minutes"]),
    ("q109", "en", "deep", "How long do I have before the device management agent forces a restart?", ["en-hb-it-devices"], [HB_IT1], [], ["three days"]),
    ("q110", "en", "deep", "Who has to use a hardware security key instead of push approvals?", ["en-hb-it-accounts"], [HB_IT1], [], ["hardware security key"]),
    ("q111", "ja", "deep", "退職者宛てのメールは何日間上長に転送されますか", [HB_IT1], ["en-hb-it-accounts"], [], ["30日間"]),
    ("q112", "ja", "deep", "海外で30日を超えて働く場合に必要な承認は？", [HB_IT2], ["en-hb-it-remote"], [], ["人事部の承認"]),
    ("q113", "ja", "deep", "マルウェアに感染したらパソコンの電源を切るべき？", [HB_IT2], ["en-hb-it-security"], [], ["電源は切らない"]),
    ("q114", "ja", "deep", "公務員を接待するときの手続き", [HB_HR1], ["en-hb-hr-travel"], [], ["公務員"]),
    ("q115", "ja", "question", "通勤手当は月いくらまで支給されますか", ["ja-hb-hr-onboarding"], ["en-hb-hr-onboarding"], [], ["50,000円"]),
    ("q116", "ja", "deep", "承認ルートのステップはいくつまで追加できますか", [HB_ADMIN1], ["en-hb-admin-approvals"], [], ["最大6つ"]),
    ("q117", "ja", "near-dup", "福岡オフィスの宅配便の集荷時刻は？", ["ja-office-fukuoka"], ["en-office-fukuoka"], ["ja-office-tokyo", "ja-office-sendai"], ["17:30"]),
    ("q118", "ja", "question", "札幌オフィスの社用車は冬に北海道の外へ持ち出せますか", ["ja-office-sapporo"], ["en-office-sapporo"], [], ["道外"]),
    ("q119", "ja", "question", "給与データ出力の深夜労働時間の誤りは何社に影響しましたか", ["ja-pm-2025-09-16-payroll"], ["en-pm-2025-09-16-payroll"], [], ["212社"]),
    ("q120", "ja", "question", "KG-110のリビジョンAでファームウェア3.xは動きますか", ["ja-guide-kg-110", "ja-faq-gate-2x-eos", "ja-news-gate-eos-2x"], ["en-guide-kg-110", "en-faq-gate-2x-eos", "en-news-gate-eos-2x"], [], ["KG-110"]),
    ("q121", "ja", "question", "時刻の丸めは打刻そのものに適用されますか", [HB_ADMIN1], ["en-hb-admin-workrules"], [], ["分単位"]),
    ("q148", "ja", "deep", "バッテリーが膨らんだノートPCを飛行機で送ってもいいですか", [HB_IT1], ["en-hb-it-devices"], [], ["航空便"]),
    ("q149", "ja", "deep", "サービスアカウントの見直しは何か月ごとに行いますか", [HB_IT1], ["en-hb-it-accounts"], [], ["6か月ごと"]),
    ("q150", "ja", "deep", "VPNのセッションは何時間で切れますか", [HB_IT2], ["en-hb-it-remote"], [], ["12時間"]),
    ("q151", "ja", "deep", "個人データが漏えいしたとき、個人情報保護責任者へはいつまでに報告しますか", [HB_IT2], ["en-hb-it-security"], [], ["24時間以内"]),
    ("q152", "ja", "deep", "支出から60日を過ぎた経費の申請には誰の承認が必要ですか", [HB_HR1], ["en-hb-hr-travel"], [], ["最高財務責任者"]),
    ("q153", "ja", "deep", "就業ルールの締め日を変えるといつから反映されますか", [HB_ADMIN1], ["en-hb-admin-workrules"], [], ["次の期間から"]),
    # ---- near-duplicate traps --------------------------------------------------------------
    ("q122", "en", "near-dup", "Factory reset a Kiriko Gate running firmware 3.x", ["en-proc-factory-reset-3x"], ["ja-proc-factory-reset-3x", "en-rel-gate-3.0.0", "en-rel-gate-3.3.0"], ["en-proc-factory-reset-2x"], ["15 seconds"]),
    ("q123", "en", "near-dup", "Recover a lost admin password on firmware 2.x", ["en-proc-password-recovery-2x"], ["ja-proc-password-recovery-2x"], ["en-proc-password-recovery-3x"], ["no way to recover"]),
    ("q124", "en", "near-dup", "Approve a request from a notification on Android", ["en-howto-approve-android"], ["ja-howto-approve-android"], ["en-howto-approve-ios", "en-howto-approve-web"], ["unlocked"]),
    ("q125", "en", "near-dup", "Clock in from the iPhone Lock Screen", ["en-howto-clock-in-ios"], ["ja-howto-clock-in-ios", "en-rel-tsumugi-6.3"], ["en-howto-clock-in-android"], ["Lock Screen"]),
    ("q126", "en", "near-dup", "What time does reception open at the Fukuoka office?", ["en-office-fukuoka"], ["ja-office-fukuoka"], ["en-office-osaka", "en-office-tokyo"], ["9:30"]),
    ("q127", "en", "near-dup", "Is the Osaka office open on Saturdays?", ["en-office-osaka"], ["ja-office-osaka", "en-team-support-osaka"], ["en-office-nagoya", "en-office-fukuoka"], ["10:00 to 15:00"]),
    ("q128", "en", "near-dup", "How many days of annual leave do employees in the UK get?", ["en-leave-uk"], ["ja-leave-uk"], ["en-leave-singapore", "en-leave-canada"], ["25 days"]),
    ("q129", "en", "near-dup", "How many leave days can staff in Singapore carry over?", ["en-leave-singapore"], ["ja-leave-singapore"], ["en-leave-uk"], ["five days"]),
    ("q130", "en", "near-dup", "Can employees clock in during the maintenance on 14 September 2025?", ["en-mnt-2025-09-14"], ["ja-mnt-2025-09-14"], ["en-mnt-2024-09-15", "en-mnt-2025-12-14"], ["unavailable"]),
    ("q131", "en", "near-dup", "Is the payroll export available during the January 2025 maintenance?", ["en-mnt-2025-01-19"], ["ja-mnt-2025-01-19"], ["en-mnt-2024-08-18", "en-mnt-2025-08-17"], ["payroll export"]),
    ("q132", "en", "near-dup", "How many people does the Kamome meeting room seat?", ["en-room-kamome"], ["ja-room-kamome"], ["en-room-tsubame", "en-room-taka"], ["seats 12", "12 seats"]),
    ("q133", "en", "near-dup", "Which Osaka meeting room is used for customer training?", ["en-room-kizu", "en-course-tsu-301", "en-team-support-osaka"], ["ja-room-kizu", "ja-course-tsu-301"], ["en-room-yodo"], ["Kizu"]),
    ("q134", "en", "near-dup", "daily allowance for a business trip to London", ["en-perdiem-london"], ["ja-perdiem-london"], ["en-perdiem-paris", "en-perdiem-new-york"], ["11,000 yen"]),
    ("q135", "en", "near-dup", "KG-110 firewall throughput", ["en-spec-kg-110"], ["ja-spec-kg-110"], ["en-spec-kg-310"], ["900 Mbps"]),
    ("q136", "en", "near-dup", "How fast does support answer on the Business plan?", ["en-plan-business"], ["ja-plan-business"], ["en-plan-starter", "en-plan-enterprise"], ["one business day"]),
    ("q137", "en", "near-dup", "Which printer at the Nagoya office prints shipping labels?", ["en-print-nagoya"], ["ja-print-nagoya"], ["en-print-osaka"], ["NGY-09"]),
    ("q138", "ja", "near-dup", "ファームウェア2.xの設定バックアップを別の機器に復元できますか", ["ja-proc-backup-2x"], ["en-proc-backup-2x"], ["ja-proc-backup-3x"], ["同じ機器にしか"]),
    ("q139", "ja", "near-dup", "ファームウェア3.xでLTEから有線回線に戻る条件", ["ja-proc-lte-failover-3x"], ["en-proc-lte-failover-3x"], ["ja-proc-lte-failover-2x"], ["5分間"]),
    ("q140", "ja", "near-dup", "Androidアプリで打刻を修正する方法", ["ja-howto-correction-android"], ["en-howto-correction-android"], ["ja-howto-correction-ios", "ja-howto-correction-web"], ["鉛筆アイコン"]),
    ("q141", "ja", "near-dup", "名古屋オフィスは土曜日も開いていますか", ["ja-office-nagoya"], ["en-office-nagoya"], ["ja-office-osaka"], ["土曜日は休業"]),
    ("q142", "ja", "near-dup", "仙台オフィスの2025年8月の早じまい", ["ja-closure-sendai"], ["en-closure-sendai"], ["ja-closure-fukuoka"], ["16:00に閉館"]),
    ("q143", "ja", "near-dup", "シンガポール出張の宿泊費の上限", ["ja-perdiem-singapore"], ["en-perdiem-singapore"], ["ja-perdiem-sydney", "ja-perdiem-toronto"], ["28,000円"]),
    ("q144", "ja", "near-dup", "2025年10月のメンテナンス中に打刻できますか", ["ja-mnt-2025-10-19"], ["en-mnt-2025-10-19"], ["ja-mnt-2024-10-20", "ja-mnt-2025-06-15"], ["打刻・申請・承認はできません"]),
    ("q145", "ja", "near-dup", "英国勤務の病気休暇は何日まで全額支給されますか", ["ja-leave-uk"], ["en-leave-uk"], ["ja-leave-canada", "ja-leave-japan"], ["10営業日"]),
    ("q146", "ja", "near-dup", "iPhoneでメールに届いたPDFの領収書を経費に使う", ["ja-howto-expense-ios"], ["en-howto-expense-ios"], ["ja-howto-expense-android", "ja-howto-expense-web"], ["共有ボタン"]),
    ("q147", "ja", "near-dup", "KG-310の動作温度", ["ja-spec-kg-310"], ["en-spec-kg-310", "ja-guide-kg-310"], ["ja-spec-kg-510"], ["0～40℃"]),
]


def queries(c):
    for qid, lang, kind, text, rel2, rel1, traps, ev in QUERIES:
        c.query(qid, lang, kind, text, rel2, rel1, traps)
        c.evidence[qid] = ev
