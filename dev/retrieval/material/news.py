"""Company news, scheduled maintenance notices, incident reports and customer case studies."""

from .corpus import pick, rng_for

FILE = "news.jsonl"
POSTMORTEM_FILE = {"en": "handbook-en.json", "ja": "handbook-ja.json"}

# key, date, en title, en text, ja title, ja text
NEWS = [
    ("fukuoka-open", "2023-04-03", "Kiriko Systems opens an office in Fukuoka",
     "Kiriko Systems opened its Fukuoka office in Tenjin on 3 April 2023. The office is home to the team that builds the Tsumugi mobile apps and to customer support for Kyushu, and it plans to grow to about 30 people within two years.",
     "キリコシステムズ、福岡オフィスを開設",
     "キリコシステムズは2023年4月3日、福岡・天神に福岡オフィスを開設しました。ツムギのモバイルアプリ開発チームと九州地区のカスタマーサポートが入居し、2年以内に約30名体制とする計画です。"),
    ("toronto-open", "2024-03-11", "Kiriko Systems opens in Toronto",
     "Our Toronto office opened on 11 March 2024 in a co-working space on King Street West. Its first task is the Canadian French version of Tsumugi, planned for early 2025, and support for customers in Canada.",
     "キリコシステムズ、トロントに拠点を開設",
     "2024年3月11日、トロントのKing Street Westのコワーキングスペースにオフィスを開設しました。最初の取り組みは2025年初めに予定しているツムギのカナダフランス語版の提供と、カナダのお客様のサポートです。"),
    ("gate-510-launch", "2022-10-18", "Kiriko Gate KG-510 launched for head offices",
     "The KG-510, launched on 18 October 2022, is the first rack-mounted Kiriko Gate. It terminates up to 500 VPN tunnels from branches, has two 10G SFP+ ports, and keeps running on redundant power supplies and a hot-swappable fan module.",
     "本社向けキリコゲートKG-510を発売",
     "2022年10月18日に発売したKG-510は、キリコゲート初のラックマウントモデルです。拠点からのVPNトンネルを最大500本集約でき、10G SFP+ポートを2つ備え、二重化電源とホットスワップ対応のファンモジュールで動作を継続します。"),
    ("price-2025", "2024-12-02", "Tsumugi price changes from April 2025",
     "From 1 April 2025 the monthly price per user of the Tsumugi Business plan changes from 600 to 650 yen. The Starter and Enterprise plans do not change. Customers on annual contracts keep their current price until their next renewal.",
     "2025年4月からのツムギの価格改定について",
     "2025年4月1日より、ツムギ ビジネスプランの1ユーザーあたりの月額料金を600円から650円に改定します。スタータープランとエンタープライズプランの料金は変わりません。年間契約のお客様は、次回更新まで現在の料金が適用されます。"),
    ("award-2024", "2024-11-20", "Tsumugi wins a workplace technology award",
     "Tsumugi received the 2024 Workplace Technology Award in the attendance management category. The judges pointed to the offline punching of the mobile app and the kiosk mode used in factories and shops.",
     "ツムギがワークプレイステクノロジーアワードを受賞",
     "ツムギが2024年ワークプレイステクノロジーアワードの勤怠管理部門を受賞しました。審査員は、モバイルアプリのオフライン打刻と、工場や店舗で使われているキオスクモードを評価しました。"),
    ("sapporo-dc", "2019-07-01", "Sapporo becomes Tsumugi's standby data centre",
     "From 1 July 2019 Tsumugi's data is copied continuously to a standby data centre in Sapporo, operated by our new Sapporo office. If the Tokyo site fails, service moves to Sapporo within one hour.",
     "札幌をツムギの待機系データセンターに",
     "2019年7月1日より、ツムギのデータを札幌の待機系データセンターに常時複製します。運用は新設の札幌オフィスが担当します。東京の拠点に障害が起きた場合は、1時間以内に札幌へ切り替えます。"),
    ("partner-program", "2023-02-14", "Kiriko Gate partner programme for North America",
     "Kiriko Systems America launched a channel partner programme for Kiriko Gate in North America. Partners receive demo units, two days of technical training in Austin and access to Kiriko Gate Cloud for their customers' sites.",
     "北米でキリコゲートのパートナープログラムを開始",
     "Kiriko Systems Americaは、北米でキリコゲートの販売パートナープログラムを開始しました。パートナーにはデモ機、オースティンでの2日間の技術研修、顧客拠点向けのキリコゲートクラウドを提供します。"),
    ("api-v1-off", "2025-03-31", "Tsumugi API version 1 switched off",
     "As announced with Tsumugi 6.0, version 1 of the Tsumugi API was switched off on 31 March 2025. Calls to version 1 now return HTTP 410 Gone. Integrations must use version 2, which has been available since 2022.",
     "ツムギAPIバージョン1の提供を終了",
     "ツムギ6.0でお知らせしたとおり、2025年3月31日にツムギAPIのバージョン1を停止しました。バージョン1への呼び出しにはHTTP 410 Goneが返ります。連携には2022年から提供しているバージョン2をご利用ください。"),
    ("csr-2025", "2025-09-01", "Kiriko Systems joins the Tenjin community clean-up",
     "Staff of our Fukuoka office joined the monthly clean-up of Tenjin Central Park organised by the neighbourhood association. The office now takes part on the first Saturday of every month.",
     "福岡オフィスが天神の地域清掃に参加",
     "福岡オフィスの社員が、町内会主催の天神中央公園の月例清掃に参加しました。今後は毎月第1土曜日に参加します。"),
    ("iso27001", "2024-06-25", "Kiriko Systems renews its ISO/IEC 27001 certification",
     "Our information security management system was recertified against ISO/IEC 27001:2022 for all offices in Japan and the Singapore office. The certificate is valid until June 2027 and can be requested from your account manager.",
     "ISO/IEC 27001認証を更新",
     "当社の情報セキュリティマネジメントシステムは、国内全オフィスとシンガポールオフィスを対象にISO/IEC 27001:2022の再認証を受けました。認証の有効期限は2027年6月で、認証書の写しは営業担当にご依頼ください。"),
    ("gate-eos-2x", "2025-01-21", "End of support for Kiriko Gate firmware 2.x announced",
     "Security fixes for Kiriko Gate firmware 2.x will end on 31 March 2026. Customers with KG-110 revision A units, which cannot run firmware 3.x, can trade them in for a KG-110 revision B at half price until the end of 2025.",
     "キリコゲート ファームウェア2.xのサポート終了について",
     "キリコゲートのファームウェア2.xのセキュリティ修正は2026年3月31日で終了します。ファームウェア3.xを利用できないKG-110リビジョンAをお使いのお客様は、2025年末までKG-110リビジョンBへ半額で買い替えられます。"),
    ("osaka-move", "2014-06-02", "Kiriko Systems opens its Osaka office",
     "Kiriko Systems opened its first office outside Tokyo on the 21st floor of the Umeda Grand Building in Osaka. The office starts with twelve people in sales and will add a second site for Tsumugi customer support in the autumn.",
     "キリコシステムズ、大阪オフィスを開設",
     "キリコシステムズは、東京以外で初めての拠点となる大阪オフィスを梅田グランドビル21階に開設しました。営業12名でスタートし、秋にはツムギのカスタマーサポートの第二拠点を設ける予定です。"),
    ("gate-cloud-launch", "2021-05-11", "Kiriko Gate Cloud launched",
     "Kiriko Gate Cloud, launched on 11 May 2021, lets customers and partners manage many gateways from one web console: configuration templates with per-site variables, firmware rollouts in maintenance windows and alerts by email.",
     "キリコゲートクラウドの提供を開始",
     "2021年5月11日、キリコゲートクラウドの提供を開始しました。1つのWeb管理画面から多数のゲートウェイを管理でき、拠点ごとの変数を使う設定テンプレート、メンテナンス時間帯でのファームウェア配信、メールによるアラート通知を利用できます。"),
    ("support-chat", "2024-09-02", "Chat support now inside the Tsumugi app",
     "Customers can now chat with Tsumugi support from inside the web and mobile apps, without opening a separate window. The chat keeps the conversation history, so administrators can pick up a conversation a colleague started.",
     "ツムギのアプリ内でチャットサポートを開始",
     "Webアプリとモバイルアプリの中から、別ウィンドウを開かずにツムギのサポートとチャットできるようになりました。会話の履歴が残るため、同僚が始めた問い合わせを別の管理者が引き継げます。"),
]

SERVICES = {
    "tsumugi": ("Tsumugi", "ツムギ"),
    "api": ("the Tsumugi API", "ツムギAPI"),
    "cloud": ("Kiriko Gate Cloud", "キリコゲートクラウド"),
}
IMPACT = {
    "all": ("The web app, the mobile apps and the API are unavailable; punches made in the mobile app during the window are sent when the service returns.",
            "Webアプリ、モバイルアプリ、APIが利用できません。時間中にモバイルアプリで行った打刻は、サービス再開後に送信されます。"),
    "readonly": ("Tsumugi stays available for viewing, but punches, requests and approvals cannot be made.",
                 "閲覧はできますが、打刻・申請・承認はできません。"),
    "export": ("The payroll export and data export are unavailable; clocking in and requests work as usual.",
               "給与データ出力とデータエクスポートが利用できません。打刻と申請は通常どおり利用できます。"),
    "kiosk": ("Kiosk tablets cannot record punches; employees can clock in from their own phone or the web app instead.",
              "キオスク端末で打刻できません。代わりに各自のスマートフォンかWebアプリで打刻してください。"),
    "api": ("API calls return HTTP 503; the web and mobile apps are not affected.",
            "APIの呼び出しにはHTTP 503が返ります。Webアプリとモバイルアプリには影響ありません。"),
    "cloud": ("Gateways keep working, but settings, firmware rollouts and alerts in Kiriko Gate Cloud are unavailable.",
              "ゲートウェイの通信には影響ありませんが、キリコゲートクラウドでの設定、ファームウェア配信、アラート通知が利用できません。"),
    "push": ("Push notifications may arrive late; approval emails are sent as usual.",
             "プッシュ通知が遅れて届く場合があります。承認依頼メールは通常どおり送信されます。"),
}
REASON = {
    "db": ("an upgrade of the database servers", "データベースサーバーの更新"),
    "network": ("network work at the Tokyo data centre", "東京データセンターのネットワーク工事"),
    "power": ("the annual inspection of the Tokyo data centre's power equipment", "東京データセンターの電源設備の年次点検"),
    "cert": ("renewal of server certificates", "サーバー証明書の更新"),
    "storage": ("replacement of storage equipment", "ストレージ機器の交換"),
    "release": ("the release of a new version", "新バージョンのリリース"),
    "search": ("rebuilding of the search index", "検索インデックスの再構築"),
}
# key (date), service, start, end, impact, reason
MAINTENANCE = [
    ("2023-01-15", "tsumugi", "2:00", "5:00", "all", "db"),
    ("2023-02-19", "cloud", "1:00", "2:00", "cloud", "release"),
    ("2023-03-19", "tsumugi", "2:00", "3:00", "push", "network"),
    ("2023-04-16", "api", "1:00", "3:00", "api", "db"),
    ("2023-05-21", "tsumugi", "2:00", "4:00", "readonly", "storage"),
    ("2023-06-18", "tsumugi", "1:00", "2:00", "kiosk", "release"),
    ("2023-07-16", "cloud", "2:00", "3:00", "cloud", "cert"),
    ("2023-08-20", "tsumugi", "2:00", "4:00", "export", "db"),
    ("2023-09-17", "tsumugi", "1:00", "5:00", "all", "power"),
    ("2023-10-15", "api", "2:00", "3:00", "api", "network"),
    ("2023-11-19", "tsumugi", "2:00", "3:30", "readonly", "release"),
    ("2023-12-17", "cloud", "1:00", "4:00", "cloud", "storage"),
    ("2024-03-17", "tsumugi", "2:00", "5:00", "all", "db"),
    ("2024-04-21", "cloud", "1:00", "3:00", "cloud", "release"),
    ("2024-05-19", "tsumugi", "3:00", "4:00", "kiosk", "release"),
    ("2024-06-09", "tsumugi", "2:00", "6:00", "readonly", "storage"),
    ("2024-07-14", "api", "1:00", "2:30", "api", "cert"),
    ("2024-08-18", "tsumugi", "2:00", "4:00", "export", "search"),
    ("2024-09-15", "cloud", "2:00", "4:00", "cloud", "network"),
    ("2024-10-20", "tsumugi", "1:00", "5:00", "all", "power"),
    ("2024-11-17", "tsumugi", "2:00", "3:00", "push", "release"),
    ("2024-12-15", "api", "2:00", "4:00", "api", "db"),
    ("2025-01-19", "tsumugi", "2:00", "4:00", "export", "db"),
    ("2025-02-16", "cloud", "1:00", "2:00", "cloud", "cert"),
    ("2025-03-16", "tsumugi", "3:00", "5:00", "kiosk", "network"),
    ("2025-04-20", "tsumugi", "2:00", "6:00", "all", "storage"),
    ("2025-05-18", "api", "1:00", "3:00", "api", "release"),
    ("2025-06-15", "tsumugi", "2:00", "3:30", "readonly", "release"),
    ("2025-07-13", "cloud", "2:00", "5:00", "cloud", "storage"),
    ("2025-08-17", "tsumugi", "1:00", "3:00", "export", "search"),
    ("2025-09-14", "tsumugi", "2:00", "5:00", "all", "network"),
    ("2025-10-19", "tsumugi", "1:00", "5:00", "readonly", "power"),
    ("2025-11-16", "api", "2:00", "3:00", "api", "cert"),
    ("2025-12-14", "tsumugi", "2:00", "4:00", "kiosk", "db"),
    ("2026-01-18", "cloud", "1:00", "3:00", "cloud", "db"),
    ("2026-02-15", "tsumugi", "2:00", "4:00", "push", "network"),
    ("2026-03-15", "tsumugi", "2:00", "5:00", "all", "db"),
    ("2026-04-19", "api", "1:00", "2:00", "api", "release"),
    ("2026-05-17", "cloud", "2:00", "4:00", "cloud", "network"),
    ("2026-06-14", "tsumugi", "1:00", "3:00", "export", "storage"),
]

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
WEEKDAY_JA = "月火水木金土日"


def _date_en(d):
    y, m, day = (int(x) for x in d.split("-"))
    return f"{day} {MONTHS[m - 1]} {y}"


def _date_ja(d):
    import datetime
    y, m, day = (int(x) for x in d.split("-"))
    wd = WEEKDAY_JA[datetime.date(y, m, day).weekday()]
    return f"{y}年{m}月{day}日（{wd}）"


# postmortems: key -> dict with both languages
POSTMORTEMS = {
    "2024-11-05-punch-delay": dict(
        date="2024-11-05", product="tsumugi",
        en_title="Incident report: delayed punches on the morning of 5 November 2024",
        ja_title="障害報告：2024年11月5日朝の打刻の遅延",
        en_summary="Between 7:58 and 9:41 JST on Tuesday 5 November 2024, punches made in Tsumugi were accepted but appeared on timesheets up to 95 minutes late. About 41,000 employees of 1,150 customers were affected during the busiest clock-in hour of the week. No punch was lost and every punch kept the time at which it was made.",
        ja_summary="2024年11月5日（火）7:58～9:41（日本時間）、ツムギで行った打刻は受け付けられたものの、勤務表への反映が最大95分遅れました。週で最も打刻が集中する時間帯に、1,150社の約41,000名に影響しました。打刻の消失はなく、すべての打刻は操作した時刻のまま記録されています。",
        en_timeline=[("7:41", "A storage controller in the Tokyo data centre restarted after a firmware fault; the database moved to its replica automatically."),
                     ("7:58", "The queue of punches waiting to be written began to grow because the replica's disks were still rebuilding their cache."),
                     ("8:06", "Monitoring alerted the on-call engineer in Sapporo that the queue had passed 10,000 punches."),
                     ("8:20", "The incident was declared and the status page updated: punches accepted, display delayed."),
                     ("8:55", "Writes were spread over two additional database nodes, and the queue stopped growing."),
                     ("9:41", "The queue was empty and all timesheets were up to date."),
                     ("11:30", "The storage vendor confirmed the firmware fault and supplied a fixed version.")],
        ja_timeline=[("7:41", "東京データセンターのストレージコントローラーがファームウェアの不具合で再起動し、データベースが自動でレプリカに切り替わりました。"),
                     ("7:58", "レプリカのディスクがキャッシュを再構築中だったため、書き込み待ちの打刻のキューが増え始めました。"),
                     ("8:06", "キューが10,000件を超えたことを監視が検知し、札幌のオンコール担当者に通知しました。"),
                     ("8:20", "障害を宣言し、ステータスページを更新しました（打刻は受付済み、表示が遅延）。"),
                     ("8:55", "書き込みを追加の2台のデータベースノードに分散し、キューの増加が止まりました。"),
                     ("9:41", "キューが空になり、すべての勤務表が最新になりました。"),
                     ("11:30", "ストレージベンダーがファームウェアの不具合を認め、修正版を提供しました。")],
        en_cause="The root cause was a fault in the storage controller's firmware that made it restart under a particular pattern of writes. The failover itself worked as designed, but the replica was sized for normal load with a warm cache, not for the Monday-after-a-holiday peak with a cold one, so it could not keep up with the punches arriving between 8:00 and 9:00.",
        ja_cause="根本原因は、特定の書き込みパターンでストレージコントローラーが再起動するファームウェアの不具合でした。切り替え自体は設計どおりに動作しましたが、レプリカはキャッシュが温まった平常時の負荷を前提に構成されており、祝日明けの朝の集中にキャッシュが冷えた状態で対応できず、8:00～9:00に届く打刻を処理しきれませんでした。",
        en_actions=["The fixed controller firmware was installed in Tokyo and Sapporo by 12 November.", "Replicas now keep their cache warm by reading a copy of the live traffic.", "The punch queue can be spread over extra database nodes automatically when it passes 5,000 punches, without an engineer's decision.", "The status page now shows the punch queue delay as its own item."],
        ja_actions=["11月12日までに東京と札幌のコントローラーに修正版ファームウェアを適用しました。", "レプリカが本番の通信の写しを読み込み、キャッシュを温めた状態を保つようにしました。", "打刻のキューが5,000件を超えた場合、担当者の判断を待たずに追加のデータベースノードへ自動で分散するようにしました。", "ステータスページに打刻キューの遅延を独立した項目として表示するようにしました。"],
    ),
    "2025-03-03-sso": dict(
        date="2025-03-03", product="tsumugi",
        en_title="Incident report: single sign-on failures on 3 March 2025",
        ja_title="障害報告：2025年3月3日のシングルサインオンの失敗",
        en_summary="From 8:30 to 10:05 JST on Monday 3 March 2025, users of companies that sign in to Tsumugi with single sign-on could not sign in; they saw error TS-1010. Users who were already signed in, users who sign in with a password, and the kiosk tablets were not affected. About 380 customers use single sign-on.",
        ja_summary="2025年3月3日（月）8:30～10:05（日本時間）、シングルサインオンでツムギにサインインしている会社のユーザーがサインインできず、エラーTS-1010が表示されました。すでにサインイン済みのユーザー、パスワードでサインインするユーザー、キオスク端末には影響ありませんでした。シングルサインオンを利用しているお客様は約380社です。",
        en_timeline=[("0:00", "Tsumugi's SAML signing certificate expired."),
                     ("8:30", "The first support chats reported TS-1010 as employees started work."),
                     ("8:47", "The incident was declared; the status page named single sign-on as affected."),
                     ("9:20", "The expired certificate was identified as the cause."),
                     ("9:40", "A new certificate was issued; customers whose identity provider reads Tsumugi's metadata automatically recovered at once."),
                     ("10:05", "Support had contacted every remaining customer whose identity provider needed the new certificate uploaded by hand; sign-in recovered for all of them during the day.")],
        ja_timeline=[("0:00", "ツムギのSAML署名証明書の有効期限が切れました。"),
                     ("8:30", "始業とともに、TS-1010を報告するチャットがサポートに届き始めました。"),
                     ("8:47", "障害を宣言し、ステータスページにシングルサインオンへの影響を掲載しました。"),
                     ("9:20", "原因が証明書の期限切れであると特定しました。"),
                     ("9:40", "新しい証明書を発行しました。IDプロバイダがツムギのメタデータを自動で読み込むお客様は即時に復旧しました。"),
                     ("10:05", "新しい証明書の手動登録が必要なお客様全社へのサポートからの連絡を終え、その日のうちに全社が復旧しました。")],
        en_cause="The certificate should have been renewed 30 days before it expired by an automated job. The job had been failing silently since January, when the DNS record it used to prove ownership of the domain was moved to a new DNS provider, and its failures were written to a log that nobody watched.",
        ja_cause="証明書は、期限の30日前に自動ジョブで更新されるはずでした。しかし1月にドメイン所有の確認に使うDNSレコードを新しいDNS事業者に移したことで、ジョブは失敗し続けており、その失敗は誰も見ていないログに記録されるだけでした。",
        en_actions=["Every certificate Tsumugi uses is now checked daily, with an alert 30 days and again 14 days before expiry.", "Failures of the renewal job page the on-call engineer.", "Customers are told by email 60 days before Tsumugi's SAML certificate changes, and the new certificate is published in the metadata 30 days ahead so that both are trusted during the overlap."],
        ja_actions=["ツムギが使うすべての証明書を毎日確認し、期限の30日前と14日前にアラートを出すようにしました。", "更新ジョブが失敗した場合、オンコール担当者を呼び出すようにしました。", "ツムギのSAML証明書を切り替える60日前にお客様にメールでお知らせし、新しい証明書を30日前からメタデータに掲載して、移行期間中は両方が信頼されるようにしました。"],
    ),
    "2025-07-22-gate-cloud": dict(
        date="2025-07-22", product="gate",
        en_title="Incident report: Kiriko Gate Cloud unreachable from gateways in western Japan on 22 July 2025",
        ja_title="障害報告：2025年7月22日 西日本のゲートウェイからキリコゲートクラウドに接続できない事象",
        en_summary="From 13:10 to 15:45 JST on Tuesday 22 July 2025, about 2,300 Kiriko Gate units, mostly in the Kansai and Chugoku regions, could not reach Kiriko Gate Cloud. Traffic through the gateways, VPN tunnels and LTE failover were not affected, but the console showed the units as offline, alerts were not sent and two scheduled firmware rollouts were postponed.",
        ja_summary="2025年7月22日（火）13:10～15:45（日本時間）、主に関西・中国地方にある約2,300台のキリコゲートがキリコゲートクラウドに接続できませんでした。ゲートウェイの通信、VPNトンネル、LTEフェイルオーバーには影響ありませんでしたが、管理画面で機器がオフラインと表示され、アラートが送信されず、予定していたファームウェア配信2件を延期しました。",
        en_timeline=[("13:02", "A change to the DNS records of the cloud endpoint was rolled out to reduce latency for western Japan."),
                     ("13:10", "Gateways whose DNS resolvers received the new record began failing to connect with E601."),
                     ("13:35", "Partners in Osaka reported units shown offline; the incident was declared."),
                     ("14:20", "The new record was found to point at a load balancer that was not yet serving the cloud certificate."),
                     ("14:28", "The DNS change was rolled back."),
                     ("15:45", "The last gateways reconnected as resolvers' cached records expired.")],
        ja_timeline=[("13:02", "西日本の遅延を減らすため、クラウドのエンドポイントのDNSレコードを変更しました。"),
                     ("13:10", "新しいレコードを受け取ったDNSリゾルバを使うゲートウェイが、E601で接続に失敗し始めました。"),
                     ("13:35", "大阪のパートナーから機器がオフライン表示になっているとの報告があり、障害を宣言しました。"),
                     ("14:20", "新しいレコードが、まだクラウドの証明書を提供していないロードバランサーを指していたことが判明しました。"),
                     ("14:28", "DNSの変更を切り戻しました。"),
                     ("15:45", "リゾルバのキャッシュが切れるにつれて、最後のゲートウェイが再接続しました。")],
        en_cause="The new load balancer had been prepared but its certificate installation was a separate step that had not been done. The change checklist tested the new address from the office network only, where an older DNS view was still in use, so the test passed. The long time to recover came from the one-hour time-to-live of the record.",
        ja_cause="新しいロードバランサーは準備済みでしたが、証明書のインストールは別の手順になっており、実施されていませんでした。変更時のチェックリストではオフィスのネットワークからのみ新しいアドレスを確認しており、そこでは古いDNSの情報が使われていたため、確認は成功してしまいました。復旧に時間がかかったのは、レコードのTTLが1時間だったためです。",
        en_actions=["DNS changes for the cloud endpoint are now tested from probes in five regions outside the company network.", "The time-to-live of the endpoint's records was lowered to five minutes.", "The firmware rollouts postponed that day ran on 29 July."],
        ja_actions=["クラウドのエンドポイントのDNS変更は、社外の5地域にあるプローブから確認するようにしました。", "エンドポイントのレコードのTTLを5分に短縮しました。", "当日延期したファームウェア配信は7月29日に実施しました。"],
    ),
    "2025-09-16-payroll": dict(
        date="2025-09-16", product="tsumugi",
        en_title="Incident report: wrong late-night minutes in payroll exports, September 2025",
        ja_title="障害報告：2025年9月 給与データ出力の深夜労働時間の誤り",
        en_summary="Payroll exports made between 9 and 16 September 2025 under Tsumugi 6.7.2 contained wrong late-night work minutes for employees on work rules that round overtime to 15 minutes. 212 customers ran an affected export. Timesheets and punches were correct throughout; only the exported figures were wrong.",
        ja_summary="2025年9月9日から16日にツムギ6.7.2で行った給与データ出力で、残業を15分単位で丸める就業ルールの従業員の深夜労働時間が誤っていました。対象の出力を行ったお客様は212社です。勤務表と打刻は終始正しく、誤っていたのは出力された数値のみです。",
        en_timeline=[("9 Sep", "Tsumugi 6.7.2 was released with a change to the rounding code."),
                     ("15 Sep", "A customer's payroll team noticed that late-night minutes did not match the timesheets and contacted support."),
                     ("16 Sep 10:00", "The fault was reproduced and the payroll export was paused for affected work rules."),
                     ("16 Sep 18:00", "Tsumugi 6.7.3 fixed the rounding, and affected customers were emailed a list of their exports to run again."),
                     ("19 Sep", "All 212 customers had been contacted by their account managers.")],
        ja_timeline=[("9月9日", "丸め処理の変更を含むツムギ6.7.2をリリースしました。"),
                     ("9月15日", "お客様の給与担当者が、深夜労働時間が勤務表と一致しないことに気づき、サポートに連絡しました。"),
                     ("9月16日 10:00", "不具合を再現し、対象の就業ルールの給与データ出力を一時停止しました。"),
                     ("9月16日 18:00", "ツムギ6.7.3で丸め処理を修正し、対象のお客様に再出力が必要な出力の一覧をメールでお送りしました。"),
                     ("9月19日", "212社すべてに営業担当からご連絡を終えました。")],
        en_cause="The change in 6.7.2 rounded overtime before splitting it into daytime and late-night parts instead of after, so minutes near 22:00 moved to the wrong side. The automated tests covered rounding and late-night work separately but not the two together.",
        ja_cause="6.7.2の変更により、残業を日中と深夜に分けた後ではなく、分ける前に丸めるようになったため、22:00前後の分が誤った側に計上されました。自動テストは丸めと深夜労働を個別には確認していましたが、組み合わせは確認していませんでした。",
        en_actions=["Tests now compare whole payroll exports for a set of reference work rules with known correct files before every release.", "Changes to rounding or premium calculations need a review by the payroll domain team.", "Export files carry the Tsumugi version that produced them, so that customers can find affected files themselves."],
        ja_actions=["リリース前に、基準となる就業ルールの給与データ出力全体を、正しいことが確認済みのファイルと比較するテストを追加しました。", "丸めや割増計算の変更には、給与領域のチームによるレビューを必須にしました。", "出力ファイルに作成したツムギのバージョンを記録し、お客様自身が対象のファイルを見つけられるようにしました。"],
    ),
}

# customer case studies: key, product, en, ja
CASES = [
    ("maruyama-foods", "tsumugi",
     ("Maruyama Foods", "a food manufacturer with four factories in Shizuoka and 1,800 employees",
      "Factory workers clocked in on paper cards that the office typed into a spreadsheet every month, which took three people five days.",
      "Kiosk tablets with IC card readers at each factory gate, and shift patterns for the three-shift rotation.",
      "The monthly closing now takes one day, and errors found by the payroll team fell from about 200 a month to under ten.",
      "The kiosk mode was the deciding point: our workers do not have company phones, and the cards they already had for the gates work on the tablets too."),
     ("丸山食品", "静岡県に4つの工場を持つ、従業員1,800名の食品メーカー",
      "工場の従業員は紙のタイムカードで打刻しており、事務所が毎月それを表計算ソフトに入力していました。3名で5日かかる作業でした。",
      "各工場の門にICカードリーダー付きのキオスク端末を置き、3交代勤務に合わせたシフトパターンを設定しました。",
      "月次締めは1日で終わるようになり、給与担当が見つける誤りは月約200件から10件未満に減りました。",
      "決め手はキオスクモードでした。工場の従業員は会社のスマートフォンを持っていませんが、門で使っていたカードがそのままタブレットで使えます。")),
    ("aozora-clinic", "tsumugi",
     ("Aozora Clinic Group", "a group of eleven clinics in Kanagawa with 420 staff",
      "Shift schedules were built in spreadsheets by each clinic, and swaps were agreed in a chat group, so the head office never knew who had actually worked.",
      "Shift scheduling in Tsumugi, with swaps requested in the app and approved by each clinic's manager.",
      "Unapproved swaps disappeared, and the time managers spend on schedules fell by about 60%.",
      "Nurses swap shifts all the time. Now they do it in the app, and the schedule is right without anyone copying anything."),
     ("あおぞらクリニックグループ", "神奈川県で11のクリニックを運営する、職員420名の医療グループ",
      "シフト表は各クリニックが表計算ソフトで作り、交代はチャットグループで決めていたため、本部は実際に誰が勤務したのか把握できていませんでした。",
      "ツムギのシフト管理を導入し、交代はアプリで申請して各クリニックの管理者が承認するようにしました。",
      "承認のない交代はなくなり、管理者がシフト作成にかける時間は約60%減りました。",
      "看護師はしょっちゅうシフトを交代します。今はアプリで交代するので、誰かが転記しなくてもシフト表が正確です。")),
    ("hokuto-logistics", "gate",
     ("Hokuto Logistics", "a logistics company with 64 depots across Hokkaido and Tohoku",
      "Depots used consumer routers and a mix of VPN products, and a broken line at a depot stopped the handheld scanners until a technician arrived.",
      "A KG-310 in every depot with LTE backup, and a KG-510 pair at the head office terminating all depot tunnels, managed with Kiriko Gate Cloud templates.",
      "Depots kept working through 37 line failures in the first year, and new depots are connected in a day from a template.",
      "In winter a cut cable can take days to repair. With LTE failover the scanners just keep working."),
     ("北斗ロジスティクス", "北海道と東北に64の営業所を持つ物流会社",
      "営業所では家庭用ルーターと複数のVPN製品が混在し、回線が切れると技術者が到着するまでハンディスキャナーが使えませんでした。",
      "全営業所にLTEバックアップ付きのKG-310を、本社に全営業所のトンネルを集約するKG-510を2台設置し、キリコゲートクラウドのテンプレートで管理しています。",
      "初年度に起きた37回の回線障害の間も営業所は業務を続けられ、新しい営業所はテンプレートから1日で接続できるようになりました。",
      "冬はケーブルが切れると修理に何日もかかります。LTEフェイルオーバーがあれば、スキャナーはそのまま動き続けます。")),
    ("sakura-retail", "tsumugi",
     ("Sakura Retail", "a chain of 230 drugstores with 5,600 employees, most of them part-time",
      "Store managers approved timesheets on paper and the head office checked overtime only after payroll, too late to act.",
      "Tsumugi with mobile clock-in limited by a geofence around each store, overtime alerts at 80% of the monthly limit, and the 36 agreement screen for the head office.",
      "Months in which a store exceeded the overtime limit fell from 14 to 1 in the first year.",
      "We now see overtime building up in the middle of the month, not after it is too late."),
     ("さくらリテール", "230店舗を展開し、従業員5,600名（大半がパート・アルバイト）のドラッグストアチェーン",
      "店長が紙で勤務表を承認しており、本部が残業を確認できるのは給与計算の後で、手遅れでした。",
      "店舗ごとのジオフェンスで制限したモバイル打刻、月間上限の80%での残業アラート、本部向けの36協定画面を備えたツムギを導入しました。",
      "残業上限を超えた店舗・月の件数は、初年度に14件から1件に減りました。",
      "月末を待たずに、月の途中で残業が積み上がっていくのが見えるようになりました。")),
    ("kanazawa-design", "tsumugi",
     ("Kanazawa Design Studio", "an architecture and design firm with 85 employees in Kanazawa and Tokyo",
      "Staff worked flextime but recorded hours in a spreadsheet, and expenses for site visits were claimed months late with lost receipts.",
      "Flextime work rules with core time, and expense claims from the phone with receipt photos taken on the spot.",
      "Expense claims arrive on average nine days after the expense instead of 47, and lost receipts are rare.",
      "Our designers are on site half the week. Taking a photo of the receipt at the counter is the only system they actually use."),
     ("金沢デザインスタジオ", "金沢と東京に拠点を置く、従業員85名の建築・デザイン事務所",
      "フレックスタイム制でしたが勤務時間は表計算ソフトで記録しており、現場訪問の経費は何か月も遅れて、しかも領収書をなくした状態で申請されていました。",
      "コアタイム付きのフレックスタイムの就業ルールと、その場で領収書を撮影するスマートフォンからの経費申請を導入しました。",
      "経費申請は支出から平均47日後だったものが9日後に届くようになり、領収書の紛失もほとんどなくなりました。",
      "デザイナーは週の半分は現場にいます。レジで領収書を撮るという方法だけが、実際に使われる仕組みでした。")),
    ("seto-city", "gate",
     ("Seto Municipal Libraries", "a network of nine public libraries",
      "Each library had its own internet line and router configured by different contractors, and nobody had a full list of the settings.",
      "KG-110 units in the small branch libraries and a KG-210 powering the access points in the central library, all configured from one Kiriko Gate Cloud template.",
      "All nine sites now share one configuration, firmware is updated automatically on Sunday nights, and the public Wi-Fi is separated from the staff network everywhere.",
      "For the first time we know exactly how every library's network is set up."),
     ("瀬戸市立図書館", "9館の公立図書館網",
      "各館がそれぞれ別の業者に設定させた回線とルーターを使っており、設定の全体を把握している人がいませんでした。",
      "小規模な分館にはKG-110を、中央館にはアクセスポイントに給電するKG-210を設置し、すべてをキリコゲートクラウドの1つのテンプレートで設定しました。",
      "9館すべてが1つの設定を共有し、ファームウェアは日曜夜に自動更新され、どの館でも利用者向けWi-Fiと職員のネットワークが分離されました。",
      "初めて、すべての図書館のネットワークがどう設定されているかを正確に把握できました。")),
]


def build(c):
    for key, date, en_t, en_x, ja_t, ja_x in NEWS:
        c.add(FILE, "en", "news", key, en_t, en_x, category="news", published=date)
        c.add(FILE, "ja", "news", key, ja_t, ja_x, category="news", published=date)
    for date, service, start, end, impact, reason in MAINTENANCE:
        r = rng_for("mnt", date)
        s_en, s_ja = SERVICES[service]
        product = "gate" if service == "cloud" else "tsumugi"
        en = pick(r,
                  f"{s_en} will be under maintenance on {_date_en(date)} from {start} to {end} JST for {REASON[reason][0]}. {IMPACT[impact][0]} We will announce the end of the work on the status page.",
                  f"Maintenance of {s_en} is scheduled for {_date_en(date)}, {start}–{end} JST. Reason: {REASON[reason][0]}. {IMPACT[impact][0]} The window may end early; the status page shows when the work is finished.")
        ja = pick(r,
                  f"{REASON[reason][1]}のため、{_date_ja(date)}{start}～{end}に{s_ja}のメンテナンスを行います。{IMPACT[impact][1]}作業の終了はステータスページでお知らせします。",
                  f"{_date_ja(date)}{start}～{end}（日本時間）に{s_ja}の定期メンテナンスを実施します。作業内容：{REASON[reason][1]}。{IMPACT[impact][1]}作業が早く終わった場合はステータスページでお知らせします。")
        c.add(FILE, "en", "mnt", date, f"Scheduled maintenance: {s_en}, {_date_en(date)}", en,
              category="maintenance", product=product, published=date)
        c.add(FILE, "ja", "mnt", date, f"【メンテナンス】{s_ja} {_date_ja(date)}", ja,
              category="maintenance", product=product, published=date)
    for key, p in POSTMORTEMS.items():
        en = (f"Summary.\n{p['en_summary']}\n\nTimeline (JST).\n" +
              "\n".join(f"{t}  {e}" for t, e in p["en_timeline"]) +
              f"\n\nRoot cause.\n{p['en_cause']}\n\nWhat we have changed.\n" +
              "\n".join("- " + a for a in p["en_actions"]) +
              "\n\nWe apologise to every customer affected. Questions about this report can be sent to support, quoting the date of the incident.")
        ja = (f"■概要\n{p['ja_summary']}\n\n■経緯（日本時間）\n" +
              "\n".join(f"{t}　{e}" for t, e in p["ja_timeline"]) +
              f"\n\n■原因\n{p['ja_cause']}\n\n■再発防止策\n" +
              "\n".join("・" + a for a in p["ja_actions"]) +
              "\n\nご迷惑をおかけしたお客様に深くお詫び申し上げます。本報告についてのお問い合わせは、障害の発生日を添えてサポートまでお寄せください。")
        c.add(POSTMORTEM_FILE["en"], "en", "pm", key, p["en_title"], en, category="incident",
              product=p["product"], published=p["date"])
        c.add(POSTMORTEM_FILE["ja"], "ja", "pm", key, p["ja_title"], ja, category="incident",
              product=p["product"], published=p["date"])
    for key, product, en, ja in CASES:
        name, who, before, what, result, quote = en
        c.add(FILE, "en", "case", key, f"Customer story: {name}",
              f"{name} is {who}.\n\nThe challenge. {before}\n\nWhat they use. {what}\n\nThe result. {result}\n\n\"{quote}\"",
              category="case-study", product=product)
        name, who, before, what, result, quote = ja
        c.add(FILE, "ja", "case", key, f"導入事例：{name}",
              f"{name}は{who}です。\n\n■課題\n{before}\n\n■導入内容\n{what}\n\n■効果\n{result}\n\n「{quote}」",
              category="case-study", product=product)
