"""Tsumugi how-to articles, one per task and platform (web, iPhone, Android): near-duplicates
that differ in the platform's steps. Also the support plans."""

KB = {"en": "kb-en.json", "ja": "kb-ja.json"}

PLATFORMS = {"web": ("the web app", "Webアプリ"), "ios": ("iPhone", "iPhone"), "android": ("Android", "Android")}

# task -> platform -> (en title, en text, ja title, ja text)
HOWTO = {
    "clock-in": {
        "web": ("Clocking in and out in the web app",
                "Sign in at app.tsumugi.example and press Clock in on the Home page; the button then changes to Clock out. Breaks are recorded with Start break and End break underneath. If your company checks locations, the browser asks once for permission to use your location, and punches are refused while permission is denied.",
                "Webアプリで出勤・退勤を打刻する",
                "app.tsumugi.example にサインインし、ホーム画面の「出勤」を押します。ボタンは「退勤」に変わります。休憩は下の「休憩開始」「休憩終了」で記録します。位置チェックを行っている会社では、ブラウザが一度だけ位置情報の利用許可を求め、許可しないと打刻できません。"),
        "ios": ("Clocking in and out on iPhone",
                "Open the Tsumugi app and tap Clock in. You can also punch from the Lock Screen: touch and hold the Lock Screen, tap Customize, add the Tsumugi widget, and from then on a tap on the widget records the punch after Face ID confirms it is you.",
                "iPhoneで出勤・退勤を打刻する",
                "ツムギアプリを開いて「出勤」をタップします。ロック画面からも打刻できます。ロック画面を長押しして「カスタマイズ」からツムギのウィジェットを追加すると、以降はウィジェットをタップし、Face IDで本人確認されると打刻が記録されます。"),
        "android": ("Clocking in and out on Android",
                    "Open the Tsumugi app and tap Clock in. For quicker punches, touch and hold the app icon and drag the Clock in shortcut to the home screen. Where your workplace has NFC tags at the entrance, holding the unlocked phone to the tag records the punch without opening the app.",
                    "Androidで出勤・退勤を打刻する",
                    "ツムギアプリを開いて「出勤」をタップします。アプリアイコンを長押しして「出勤」ショートカットをホーム画面に置くと、すばやく打刻できます。職場の入口にNFCタグがある場合は、ロックを解除したスマートフォンをタグにかざすだけで、アプリを開かずに打刻できます。"),
    },
    "leave": {
        "web": ("Requesting leave in the web app",
                "Go to Leave > New request, choose the leave type and the dates, and mark half days if your company allows them. For sick leave longer than three days, attach the medical certificate as a PDF or image before submitting. The request appears under My requests with its approval progress.",
                "Webアプリで休暇を申請する",
                "「休暇」＞「新規申請」で休暇種別と日付を選び、会社が認めていれば半休を指定します。3日を超える病気休暇では、申請前に診断書をPDFまたは画像で添付してください。申請は「自分の申請」に承認状況とともに表示されます。"),
        "ios": ("Requesting leave on iPhone",
                "Tap Requests, then the + button, then Leave. The calendar shows which teammates already have approved leave on each day, if your administrator allows it, so you can avoid clashes. Submit, and follow the approval in the same tab.",
                "iPhoneで休暇を申請する",
                "「申請」タブで＋ボタン、「休暇」の順にタップします。管理者が許可していれば、カレンダーにチームメンバーの承認済み休暇が表示されるので、重ならないように選べます。送信後は同じタブで承認状況を確認できます。"),
        "android": ("Requesting leave on Android",
                    "Open the Requests tab at the bottom of the screen and tap the round + button, then Leave. Choose the type and dates; your remaining balance for that type is shown before you submit. Requests drafted without a connection are kept as drafts and can be sent later.",
                    "Androidで休暇を申請する",
                    "画面下の「申請」タブを開き、丸い＋ボタン、「休暇」の順にタップします。種別と日付を選ぶと、送信前にその種別の残日数が表示されます。通信できない状態で作成した申請は下書きとして保存され、後で送信できます。"),
    },
    "expense": {
        "web": ("Submitting an expense claim in the web app",
                "Go to Expenses > New claim and drag receipt images or PDFs onto the page; up to 20 receipts can be uploaded at once and each becomes a line of the claim. PDF invoices that contain text are read without OCR, so their amounts are exact.",
                "Webアプリで経費を申請する",
                "「経費」＞「新規申請」を開き、領収書の画像やPDFを画面にドラッグします。一度に20枚までアップロードでき、1枚ごとに明細行になります。テキストを含むPDFの請求書はOCRを使わずに読み取るため、金額が正確です。"),
        "ios": ("Submitting an expense claim on iPhone",
                "Tap Expenses and the camera icon, and photograph the receipt; the app straightens and crops the image. Use Add page for receipts longer than one photo. You can also share a PDF receipt from Mail to Tsumugi with the share button.",
                "iPhoneで経費を申請する",
                "「経費」でカメラアイコンをタップし、領収書を撮影します。画像の傾きと余白は自動で補正されます。1枚に収まらない長い領収書は「ページを追加」を使います。メールで届いたPDFの領収書は、共有ボタンからツムギに送れます。"),
        "android": ("Submitting an expense claim on Android",
                    "Tap Expenses and the camera icon, or share a receipt to Tsumugi from Google Drive or your gallery. Receipts photographed without a connection are stored on the phone and uploaded automatically when you are back online.",
                    "Androidで経費を申請する",
                    "「経費」でカメラアイコンをタップするか、Googleドライブやギャラリーから領収書をツムギに共有します。通信できない状態で撮影した領収書は端末に保存され、オンラインに戻ると自動でアップロードされます。"),
    },
    "approve": {
        "web": ("Approving requests in the web app",
                "The Approvals page lists everything waiting for you. Tick up to 50 requests and press Approve to approve them in one go. Rejecting always needs a comment, which the requester sees.",
                "Webアプリで申請を承認する",
                "「承認」ページに承認待ちの申請が一覧表示されます。最大50件にチェックを入れて「承認」を押すと一括承認できます。却下する場合はコメントが必須で、申請者に表示されます。"),
        "ios": ("Approving requests on iPhone",
                "In the Approvals tab, swipe a request to the right to approve it or to the left to reject it with a comment. You can also approve straight from the notification: touch and hold it and choose Approve; Face ID is asked for first.",
                "iPhoneで申請を承認する",
                "「承認」タブで申請を右にスワイプすると承認、左にスワイプするとコメント付きで却下できます。通知から直接承認することもでき、通知を長押しして「承認」を選ぶと、先にFace IDで確認されます。"),
        "android": ("Approving requests on Android",
                    "Open the Approvals tab and tap a request to see its details, then Approve or Reject. Notifications carry an Approve action that works only while the phone is unlocked. Bulk approval is not available in the Android app; use the web app for it.",
                    "Androidで申請を承認する",
                    "「承認」タブで申請をタップして内容を確認し、「承認」または「却下」を選びます。通知の「承認」ボタンは端末のロック解除中のみ使えます。Androidアプリには一括承認がないため、まとめて承認するときはWebアプリを使ってください。"),
    },
    "correction": {
        "web": ("Correcting a punch in the web app",
                "Open Timesheet, click the day and choose Request correction. Enter the right times and a reason. To fix several days at once, for example after a business trip, use Correct several days at the top of the timesheet.",
                "Webアプリで打刻を修正する",
                "「勤務表」で対象日をクリックし、「修正を申請」を選びます。正しい時刻と理由を入力してください。出張の後など複数日をまとめて直すときは、勤務表上部の「複数日を修正」を使います。"),
        "ios": ("Correcting a punch on iPhone",
                "In the Timesheet tab, tap the day and then Request correction. Enter the times and a reason; you can attach a photo, for example of a paper sign-in sheet from a customer's site.",
                "iPhoneで打刻を修正する",
                "「勤務表」タブで対象日をタップし、「修正を申請」をタップします。時刻と理由を入力し、客先の紙の入館記録などの写真を添付することもできます。"),
        "android": ("Correcting a punch on Android",
                    "In the Timesheet tab, tap the pencil icon next to the day. Enter the times and a reason and send. Corrections for days in a closed month cannot be sent from the app; ask your administrator.",
                    "Androidで打刻を修正する",
                    "「勤務表」タブで対象日の横の鉛筆アイコンをタップします。時刻と理由を入力して送信します。締め済みの月の修正はアプリから送れないため、管理者に依頼してください。"),
    },
}

# plan -> (en title, en text, ja title, ja text)
PLANS = {
    "starter": ("Tsumugi support: Starter plan",
                "The Starter plan includes support by in-app chat and email on weekdays from 9:00 to 18:00 Japan time. We answer within two business days. Phone support and a service level agreement are not included. The Starter plan suits companies of up to 30 employees; it has no single sign-on and no audit log.",
                "ツムギのサポート：スタータープラン",
                "スタータープランでは、平日9:00～18:00（日本時間）にアプリ内チャットとメールでサポートします。回答は2営業日以内です。電話サポートとサービスレベル契約（SLA）は含まれません。従業員30名までの会社向けのプランで、シングルサインオンと監査ログはありません。"),
    "business": ("Tsumugi support: Business plan",
                 "The Business plan adds phone support on weekdays from 9:00 to 17:00 Japan time to chat and email. The first answer comes within one business day, and within four business hours for problems that stop employees from clocking in. Single sign-on and a 90-day audit log are included.",
                 "ツムギのサポート：ビジネスプラン",
                 "ビジネスプランでは、チャットとメールに加えて平日9:00～17:00（日本時間）の電話サポートを利用できます。初回回答は1営業日以内、従業員が打刻できない障害は営業時間内4時間以内です。シングルサインオンと90日間の監査ログが含まれます。"),
    "enterprise": ("Tsumugi support: Enterprise plan",
                   "The Enterprise plan has a 24-hour phone line, every day of the year, for priority 1 incidents, with a first response within one hour. Other questions are answered within four business hours. A named customer success manager holds a review every quarter, and the service level agreement guarantees 99.9% monthly availability, with service credits if it is missed.",
                   "ツムギのサポート：エンタープライズプラン",
                   "エンタープライズプランでは、優先度1の障害について365日24時間の電話窓口を利用でき、初回応答は1時間以内です。その他の問い合わせは営業時間内4時間以内に回答します。専任のカスタマーサクセス担当者が四半期ごとにレビューを行い、SLAで月間稼働率99.9%を保証します。未達の場合はサービスクレジットを提供します。"),
}


def build(c):
    for task, per in HOWTO.items():
        for plat, (en_t, en_x, ja_t, ja_x) in per.items():
            c.add(KB["en"], "en", "howto", f"{task}-{plat}", en_t, en_x, category="howto",
                  product="tsumugi", platform=plat)
            c.add(KB["ja"], "ja", "howto", f"{task}-{plat}", ja_t, ja_x, category="howto",
                  product="tsumugi", platform=plat)
    for plan, (en_t, en_x, ja_t, ja_x) in PLANS.items():
        c.add(KB["en"], "en", "plan", plan, en_t, en_x, category="support", product="tsumugi")
        c.add(KB["ja"], "ja", "plan", plan, ja_t, ja_x, category="support", product="tsumugi")
