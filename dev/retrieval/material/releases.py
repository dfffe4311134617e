"""Release notes: Tsumugi releases and Kiriko Gate firmware releases, one record per release
and language."""

FILE = "releases.jsonl"

# version, date, list of (en, ja) items
TSUMUGI = [
    ("5.8", "2024-02-06", [
        ("Shift schedules can be exported to Excel, one sheet per week.", "シフト表を週ごとのシートに分けてExcelに出力できるようになりました。"),
        ("Managers see a warning when a schedule leaves fewer than eleven hours of rest between two shifts.", "2つのシフトの間の休息が11時間未満になる場合、管理者に警告が表示されるようになりました。"),
        ("Fixed: the leave calendar showed public holidays of the wrong year after a year change.", "修正：年が替わった後、休暇カレンダーに前年の祝日が表示される問題。"),
        ("The employee import accepts up to 5,000 rows, up from 2,000.", "従業員インポートの上限を2,000行から5,000行に引き上げました。"),
    ]),
    ("5.9", "2024-04-09", [
        ("Expense policies can set a per-person limit for client entertainment.", "経費規程で接待交際費の1人あたり上限を設定できるようになりました。"),
        ("Claims above a policy limit go to an additional approver instead of being refused.", "規程の上限を超えた経費申請は、却下されずに追加の承認者へ回るようになりました。"),
        ("New report: overtime by department and month, with a 12-month trend.", "新しいレポート：部署別・月別の残業時間（12か月の推移付き）。"),
        ("Fixed: half-day leave on a flextime work rule reduced the core time incorrectly.", "修正：フレックスタイム制の就業ルールで半休を取るとコアタイムが正しく短縮されない問題。"),
    ]),
    ("6.0", "2024-06-11", [
        ("The mobile app now keeps offline punches for 72 hours instead of 24.", "モバイルアプリがオフライン打刻を保持する時間を24時間から72時間に延長しました。"),
        ("Bulk approval in the web app handles up to 50 requests at once, up from 20.", "Webアプリの一括承認で一度に処理できる件数を20件から50件に増やしました。"),
        ("A redesigned Home page shows today's punches, pending requests and the leave balance together.", "ホーム画面を刷新し、当日の打刻、申請中の件数、休暇残日数をまとめて表示するようにしました。"),
        ("API version 1 is deprecated and will be switched off on 31 March 2025; use version 2.", "APIバージョン1を非推奨とし、2025年3月31日に停止します。バージョン2をご利用ください。"),
        ("The minimum supported versions are now iOS 16 and Android 10.", "対応OSの下限をiOS 16およびAndroid 10に引き上げました。"),
    ]),
    ("6.1", "2024-08-06", [
        ("Webhook calls are now signed with HMAC-SHA256 in the X-Tsumugi-Signature header.", "Webhookの呼び出しにX-Tsumugi-SignatureヘッダーでHMAC-SHA256の署名を付けるようになりました。"),
        ("Failed webhook calls are retried five times over about an hour.", "失敗したWebhookの呼び出しを約1時間かけて5回再送するようにしました。"),
        ("Approvers can add a comment when approving, not only when rejecting.", "却下時だけでなく、承認時にもコメントを付けられるようになりました。"),
        ("Fixed: the payroll export rounded night-work minutes twice for some work rules.", "修正：一部の就業ルールで、給与データ出力の深夜労働時間が二重に丸められる問題。"),
    ]),
    ("6.2", "2024-10-08", [
        ("Kiosk mode can take a photo of the employee at each punch.", "キオスクモードで打刻のたびに従業員の写真を撮影できるようになりました。"),
        ("Kiosk tablets can register an unknown IC card on the spot when the employee enters their PIN.", "キオスク端末で、未登録のICカードを従業員がPINを入力してその場で登録できるようになりました。"),
        ("The 36 agreement screen lists employees approaching their overtime limits.", "36協定の画面で、残業時間の上限に近づいている従業員を一覧表示できるようになりました。"),
        ("Fixed: leave requests spanning the closing day were counted in the wrong month.", "修正：締め日をまたぐ休暇申請が誤った月に計上される問題。"),
    ]),
    ("6.3", "2024-12-10", [
        ("iPhone users can clock in from a Lock Screen widget, confirmed with Face ID.", "iPhoneで、Face IDによる確認付きでロック画面のウィジェットから打刻できるようになりました。"),
        ("Approvers can approve from an iPhone notification without opening the app.", "iPhoneの通知から、アプリを開かずに承認できるようになりました。"),
        ("Receipt photos are straightened and cropped automatically.", "領収書の写真の傾きと余白を自動で補正するようになりました。"),
        ("Fixed: an expired SSO certificate produced a blank page instead of error TS-1010.", "修正：SSO証明書の期限切れ時に、エラーTS-1010ではなく空白のページが表示される問題。"),
    ]),
    ("6.4", "2025-02-04", [
        ("Tsumugi is now available in Canadian French, in the web app, the mobile apps and notification emails.", "Webアプリ、モバイルアプリ、通知メールがカナダフランス語に対応しました。"),
        ("Punches are stored with the time zone of the employee's work location.", "打刻を従業員の勤務地のタイムゾーンで保存するようにしました。"),
        ("Public holiday calendars for the Canadian provinces were added.", "カナダ各州の祝日カレンダーを追加しました。"),
        ("Fixed: the leave balance widget showed hours instead of days for some leave types.", "修正：一部の休暇種別で、休暇残日数のウィジェットが日数ではなく時間で表示される問題。"),
    ]),
    ("6.5", "2025-04-08", [
        ("Android phones can punch by touching an NFC tag at the entrance, without opening the app.", "Androidで、入口のNFCタグにかざすだけでアプリを開かずに打刻できるようになりました。"),
        ("Administrators can exempt the mobile app from IP restrictions.", "管理者がモバイルアプリをIP制限の対象外にできるようになりました。"),
        ("The audit log of the Enterprise plan is kept for two years, up from one.", "エンタープライズプランの監査ログの保存期間を1年から2年に延長しました。"),
        ("Fixed: CSV imports with a byte order mark failed with TS-6001.", "修正：BOM付きのCSVファイルの取り込みがTS-6001で失敗する問題。"),
    ]),
    ("6.6", "2025-06-10", [
        ("Overtime alerts notify employees and managers at 80% of a threshold and again when it is exceeded.", "残業アラートが、上限の80%に達したときと超えたときに本人と上長へ通知するようになりました。"),
        ("Shift managers can copy a week's schedule to the following four weeks in one step.", "シフト管理者が、1週間分のシフトを以降の4週間に一度にコピーできるようになりました。"),
        ("PDF invoices that contain text are read without OCR.", "テキストを含むPDFの請求書をOCRを使わずに読み取るようになりました。"),
        ("Fixed: the Android app did not show the remaining balance before a leave request was submitted.", "修正：Androidアプリで休暇申請の送信前に残日数が表示されない問題。"),
    ]),
    ("6.7", "2025-08-05", [
        ("The paid-leave obligation screen lists employees who have not taken five days within a year of their grant date.", "有給休暇の取得義務画面で、付与日から1年以内に5日を取得していない従業員を一覧表示できるようになりました。"),
        ("Reminders about the five-day obligation can be sent to employees and their managers.", "年5日の取得義務について、本人と上長にリマインドを送れるようになりました。"),
        ("API tokens can overlap with their successor for up to seven days.", "APIトークンを、後継のトークンと最大7日間併用できるようになりました。"),
        ("Fixed: the Approvals tab in the iPhone app sometimes listed a request twice.", "修正：iPhoneアプリの「承認」タブで同じ申請が2件表示されることがある問題。"),
    ]),
    ("6.8", "2025-10-07", [
        ("Group companies can link their tenants and run consolidated attendance reports.", "グループ会社がテナントを連携し、勤怠の連結レポートを作成できるようになりました。"),
        ("The time correction screen in the web app can fix several days at once.", "Webアプリの打刻修正画面で、複数日をまとめて修正できるようになりました。"),
        ("Photos can be attached to time correction requests on iPhone.", "iPhoneで打刻修正申請に写真を添付できるようになりました。"),
        ("Fixed: the Excel export of shift schedules dropped night shifts that ended after midnight.", "修正：シフト表のExcel出力で、日付をまたぐ夜勤が欠落する問題。"),
    ]),
    ("6.9", "2025-12-09", [
        ("Expense claims from the web app accept up to 20 receipts at once.", "Webアプリの経費申請で、一度に20枚まで領収書をアップロードできるようになりました。"),
        ("Receipts photographed offline on Android are uploaded automatically once the phone is back online.", "Androidでオフライン時に撮影した領収書を、オンライン復帰後に自動でアップロードするようになりました。"),
        ("The per-diem table can hold different rates for the same destination by job grade.", "日当の表で、同じ行き先でも職位ごとに異なる金額を設定できるようになりました。"),
        ("Fixed: delegates could not see attachments of requests they approved.", "修正：代理承認者が承認した申請の添付ファイルを閲覧できない問題。"),
    ]),
]

GATE = [
    ("2.8.4", "2023-09-12", [
        ("Security fix for the web console's session handling (KSA-2023-07).", "管理画面のセッション処理に関するセキュリティ修正（KSA-2023-07）。"),
        ("Fixed: PPPoE reconnected every 24 hours even when the provider did not require it.", "修正：プロバイダが求めていないのにPPPoEが24時間ごとに再接続する問題。"),
    ]),
    ("2.9.0", "2024-03-05", [
        ("Last feature release of the 2.x line: DHCP reservations can be imported from CSV.", "2.x系最後の機能追加リリース：DHCPの固定割り当てをCSVから取り込めるようになりました。"),
        ("Dead peer detection intervals can be set per VPN peer.", "デッドピア検出の間隔をVPN対向ごとに設定できるようになりました。"),
        ("Fixed: the WAN LED stayed green after the link dropped on some KG-110 revision A units.", "修正：KG-110リビジョンAの一部で、リンク断の後もWANランプが緑色のままになる問題。"),
    ]),
    ("2.9.3", "2025-01-21", [
        ("Security fix for the IKEv1 implementation (KSA-2025-01).", "IKEv1の実装に関するセキュリティ修正（KSA-2025-01）。"),
        ("Firmware 2.x receives security fixes until 31 March 2026.", "ファームウェア2.xのセキュリティ修正の提供は2026年3月31日までです。"),
    ]),
    ("3.0.0", "2023-11-14", [
        ("Two firmware banks: a unit that fails to start new firmware three times starts the previous one again.", "ファームウェア領域を二重化しました。新しいファームウェアで3回起動に失敗すると、以前のファームウェアで起動します。"),
        ("Automatic firmware updates in a maintenance window.", "メンテナンス時間帯での自動ファームウェア更新に対応しました。"),
        ("IKEv2 is the default for new VPN peers, with certificate authentication.", "新しいVPN対向の標準をIKEv2とし、証明書認証に対応しました。"),
        ("The RESET button restarts the unit after 5 seconds and resets it after 15 seconds.", "RESETボタンを5秒押すと再起動、15秒押すと初期化するようにしました。"),
        ("Lost admin passwords can be recovered through the console port with the recovery code on the label.", "ラベル記載のリカバリーコードを使い、コンソールポートから管理者パスワードを回復できるようになりました。"),
    ]),
    ("3.1.0", "2024-05-21", [
        ("Route-based VPN with virtual tunnel interfaces and dynamic routing over the tunnels.", "仮想トンネルインターフェースによるルートベースVPNと、トンネル上の動的ルーティングに対応しました。"),
        ("Configuration backups are encrypted with a passphrase and can be restored on another unit of the same model.", "設定のバックアップをパスフレーズで暗号化し、同じモデルの別の機器に復元できるようになりました。"),
        ("Daily cloud backups for units registered with Kiriko Gate Cloud, keeping 30 generations.", "キリコゲートクラウドに登録した機器の設定を毎日クラウドにバックアップし、30世代を保持します。"),
    ]),
    ("3.2.0", "2024-11-19", [
        ("Support for the KA-USB4 USB LTE modem on the KG-110, KG-210 and KG-510.", "KG-110、KG-210、KG-510でKA-USB4 USB LTEモデムに対応しました。"),
        ("LTE failover checks the wired line with pings every 10 seconds instead of watching only the physical link.", "LTEフェイルオーバーが、物理リンクの監視だけでなく10秒ごとのpingで有線回線を確認するようになりました。"),
        ("Fixed: the KG-210 turned off PoE on port 1 instead of port 4 when the budget was exceeded.", "修正：給電量を超えたとき、KG-210がポート4ではなくポート1の給電を止める問題。"),
    ]),
    ("3.3.0", "2025-06-17", [
        ("A monthly LTE data allowance can be set, with an alert at 80%.", "LTEの月間データ量の上限を設定し、80%でアラートを出せるようになりました。"),
        ("Factory reset from the console can keep the Kiriko Gate Cloud registration.", "管理画面からの初期化で、キリコゲートクラウドへの登録を残せるようになりました。"),
        ("The fan module of the KG-510 reports its speed on the status page.", "KG-510のファンモジュールの回転数を状態画面に表示するようになりました。"),
        ("Fixed: E601 was reported although the clock was correct when the NTP server answered slowly.", "修正：NTPサーバーの応答が遅いと、時刻が正しくてもE601が表示される問題。"),
    ]),
]


def build(c):
    for version, date, items in TSUMUGI:
        key = "tsumugi-" + version
        c.add(FILE, "en", "rel", key, f"Tsumugi {version} release notes",
              f"Tsumugi {version} was released on {date}.\n\n" + "\n".join("- " + en for en, _ in items),
              category="release", product="tsumugi", version=version, published=date)
        c.add(FILE, "ja", "rel", key, f"ツムギ {version} リリースノート",
              f"ツムギ {version} を{date}にリリースしました。\n\n" + "\n".join("・" + ja for _, ja in items),
              category="release", product="tsumugi", version=version, published=date)
    for version, date, items in GATE:
        key = "gate-" + version
        c.add(FILE, "en", "rel", key, f"Kiriko Gate firmware {version} release notes",
              f"Firmware {version} for Kiriko Gate was released on {date}.\n\n" + "\n".join("- " + en for en, _ in items),
              category="release", product="gate", version=version, published=date)
        c.add(FILE, "ja", "rel", key, f"キリコゲート ファームウェア {version} リリースノート",
              f"キリコゲートのファームウェア {version} を{date}に公開しました。\n\n" + "\n".join("・" + ja for _, ja in items),
              category="release", product="gate", version=version, published=date)
