"""Internal reference records for Kiriko staff: leave rules per country, the training catalogue,
the approved software list, team pages, office Wi-Fi and printing, overseas daily allowances
and short staff questions."""

from .corpus import pick, rng_for

FILE = {"en": "handbook-en.json", "ja": "handbook-ja.json"}
STAFF_FAQ_FILE = {"en": "faq-en.jsonl", "ja": "faq-ja.jsonl"}

LEAVE = {
    "japan": ("Leave rules: employees in Japan",
              "Paid annual leave starts at 10 days after six months of service and rises each year to 20 days after six and a half years, as the Labour Standards Act sets out. Kiriko adds three refresh days every April, which must be used by the end of March. Summer leave of three days can be taken between July and September. Up to five days of sick leave a year are paid without using annual leave; longer illness uses annual leave first. Unused annual leave carries over for two years.",
              "休暇規程：国内勤務の社員",
              "年次有給休暇は、労働基準法に従い、勤続6か月で10日が付与され、毎年増えて勤続6年6か月で20日になります。当社は毎年4月にリフレッシュ休暇を3日付与し、翌年3月末までに使う必要があります。夏季休暇3日は7月から9月の間に取得できます。病気休暇は年5日まで年次有給休暇を使わずに有給で取得でき、それを超える場合は年次有給休暇から使います。使わなかった年次有給休暇は2年間繰り越せます。"),
    "singapore": ("Leave rules: employees in Singapore",
                  "Employees in Singapore receive 18 days of annual leave a year. Up to 14 days of outpatient sick leave and 60 days of hospitalisation leave are paid, with a medical certificate. Parents of a Singaporean child under seven get six days of childcare leave a year. Up to five days of annual leave can be carried into the next year and must be used by 31 March.",
                  "休暇規程：シンガポール勤務の社員",
                  "シンガポール勤務の社員の年次休暇は年18日です。診断書があれば、通院による病気休暇は14日まで、入院休暇は60日まで有給です。7歳未満のシンガポール国籍の子を持つ親は、年6日の育児休暇を取得できます。年次休暇は5日まで翌年に繰り越せ、3月31日までに使う必要があります。"),
    "uk": ("Leave rules: employees in the United Kingdom",
           "Employees in the UK receive 25 days of annual leave plus the bank holidays of England. Up to five unused days can be carried over and must be taken by 31 March. Sick leave is paid in full for up to ten working days a year, after which statutory sick pay applies. Two volunteering days a year are available for charity work.",
           "休暇規程：英国勤務の社員",
           "英国勤務の社員の年次休暇は年25日で、これとは別にイングランドのバンクホリデーが休日になります。使わなかった休暇は5日まで繰り越せ、3月31日までに取得する必要があります。病気休暇は年10営業日まで全額支給され、それを超えると法定傷病手当が適用されます。慈善活動のためのボランティア休暇が年2日あります。"),
    "us": ("Leave rules: employees in the United States",
           "Employees in the US accrue 15 days of paid time off a year, added with each payroll. They also receive five paid sick days and two floating holidays, which can be used for any holiday that matters to them. Up to 40 hours of unused paid time off carry over into the next year.",
           "休暇規程：米国勤務の社員",
           "米国勤務の社員は、給与支払いごとに加算される形で年15日の有給休暇（PTO）を得ます。これとは別に、有給の病気休暇が5日、本人にとって大切な祝日に使えるフローティングホリデーが2日あります。使わなかったPTOは40時間まで翌年に繰り越せます。"),
    "canada": ("Leave rules: employees in Canada",
               "Employees in Canada receive 15 days of vacation a year, more than the Ontario minimum. Kiriko pays six sick days a year, twice the three unpaid days the province requires. Vacation must be taken within ten months of the end of the year in which it was earned.",
               "休暇規程：カナダ勤務の社員",
               "カナダ勤務の社員の年次休暇は年15日で、オンタリオ州の最低基準を上回ります。病気休暇は、州が定める無給3日の2倍にあたる年6日を有給とします。休暇は、付与された年の終わりから10か月以内に取得する必要があります。"),
}

# code, hours en, hours ja, format en/ja, en title, en text, ja title, ja text
COURSES = [
    ("SEC-101", "Information security basics", "90-minute online course, required within 30 days of joining and every April after that. Covers passwords, phishing, information classes and what to do when a device is lost.",
     "情報セキュリティの基礎", "90分のオンライン研修で、入社後30日以内と、以降毎年4月に受講が必須です。パスワード、フィッシング、情報の区分、端末紛失時の対応を扱います。"),
    ("PRV-101", "Personal data protection", "45-minute online course, required within 30 days of joining. Explains what counts as personal data under Japanese law and the GDPR, and how customer data in Tsumugi may be used in support cases.",
     "個人情報保護", "45分のオンライン研修で、入社後30日以内の受講が必須です。国内法とGDPRにおける個人データの範囲と、サポート対応でツムギの顧客データをどう扱ってよいかを説明します。"),
    ("HRS-101", "Harassment prevention", "45-minute online course, required within 30 days of joining, with a 20-minute refresher every October. Managers take the longer version HRS-201.",
     "ハラスメント防止", "45分のオンライン研修で、入社後30日以内の受講が必須です。毎年10月に20分の復習版があります。管理職は長時間版のHRS-201を受講します。"),
    ("MGR-201", "New manager programme", "Three days in Tokyo for employees promoted to their first management role, within six months of the promotion. Covers feedback, evaluations, labour law for managers and approving time in Tsumugi.",
     "新任管理職研修", "初めて管理職に昇進した社員向けの3日間の研修で、昇進後6か月以内に東京で受講します。フィードバック、評価、管理職が知るべき労働法、ツムギでの勤怠承認を扱います。"),
    ("MGR-210", "Approving time and leave", "One-hour online course for anyone who approves requests in Tsumugi: what to check in a time correction, overtime limits, and delegation.",
     "勤怠・休暇の承認", "ツムギで申請を承認するすべての人向けの1時間のオンライン研修です。打刻修正で確認すべき点、残業の上限、代理承認を扱います。"),
    ("TSU-301", "Tsumugi administrator training for customers", "A one-day classroom course for customers' Tsumugi administrators, held monthly in the Kizu room in Osaka and the Taka room in Tokyo. Free for Business and Enterprise customers, two seats per customer a year.",
     "お客様向けツムギ管理者トレーニング", "お客様のツムギ管理者向けの1日の集合研修で、毎月、大阪の木津会議室と東京のたか会議室で開催します。ビジネスプランとエンタープライズプランのお客様は、年2名まで無料です。"),
    ("GATE-201", "Kiriko Gate installation for partners", "Two days of hands-on training for channel partners, held in Austin and Nagoya. Partners who pass the final test can sell Kiriko Care and receive demo units.",
     "パートナー向けキリコゲート設置研修", "販売パートナー向けの2日間の実習研修で、オースティンと名古屋で開催します。最終試験に合格したパートナーはキリコケアを販売でき、デモ機を受け取れます。"),
    ("GATE-301", "VPN design with Kiriko Gate", "A one-day course on designing hub-and-spoke networks with the KG-510 as the hub: route-based tunnels, dynamic routing and LTE backup. Requires GATE-201.",
     "キリコゲートによるVPN設計", "KG-510をハブとするハブ＆スポーク型ネットワークの設計を学ぶ1日の研修です。ルートベースのトンネル、動的ルーティング、LTEバックアップを扱います。GATE-201の修了が条件です。"),
    ("DEV-110", "Secure coding", "Four hours, online, for all developers every year. Covers input validation, secrets in code, dependency updates and the review checklist used before each Tsumugi release.",
     "セキュアコーディング", "全開発者が毎年受講する4時間のオンライン研修です。入力値の検証、コード内の秘密情報、依存関係の更新、ツムギの各リリース前に使うレビューのチェックリストを扱います。"),
    ("OPS-220", "Incident command", "A half-day exercise for everyone on an on-call rota. Participants run a simulated major incident from the Teine room in Sapporo or remotely, including status page updates.",
     "インシデント指揮", "オンコール当番に入るすべての人向けの半日の演習です。札幌の手稲会議室またはリモートから、ステータスページの更新を含む模擬の重大インシデントに対応します。"),
    ("SUP-101", "Support desk onboarding", "Five days in Osaka for new support desk staff: Tsumugi from the customer's side, the ticket system, and listening to live calls with an experienced colleague.",
     "サポート窓口 新人研修", "新しくサポート窓口に配属された社員向けの5日間の研修で、大阪で行います。お客様側から見たツムギ、チケットシステム、先輩社員と一緒の通話の聞き取りを扱います。"),
    ("ENG-101", "Business English writing", "Eight one-hour online sessions on writing emails and documents in English for colleagues abroad. Open to all staff; the company pays if you attend at least six sessions.",
     "ビジネス英語ライティング", "海外の同僚に向けた英文メールや文書の書き方を学ぶ、1時間×8回のオンライン講座です。全社員が受講でき、6回以上出席すれば費用は会社負担です。"),
    ("JPN-101", "Japanese for overseas staff", "A weekly online class of one hour for staff outside Japan, running for 40 weeks from October. Beginners and intermediate learners are taught in separate groups.",
     "海外社員向け日本語", "日本国外の社員向けの週1回1時間のオンライン講座で、10月から40週間行います。初級と中級は別のクラスです。"),
    ("SAF-101", "Floor warden training", "Two hours in each office every September for the floor wardens: evacuation routes, counting staff at the assembly point and using the AED.",
     "避難誘導員研修", "各オフィスで毎年9月に行う、避難誘導員向けの2時間の研修です。避難経路、集合場所での人数確認、AEDの使い方を扱います。"),
    ("FA-101", "First aid", "A three-hour first aid course with a certificate valid for three years. Each office aims to have at least one trained person per 20 staff.",
     "応急手当", "修了証の有効期間が3年の、3時間の応急手当講習です。各オフィスで社員20名につき1名以上の受講者を置くことを目標にしています。"),
    ("DAT-201", "SQL for analysts", "Two days of SQL on a copy of the Tsumugi reporting database with customer data removed. For analysts and product managers; laptops with DBeaver installed are provided.",
     "アナリスト向けSQL", "顧客データを取り除いたツムギのレポート用データベースの複製を使い、2日間でSQLを学びます。アナリストとプロダクトマネージャー向けで、DBeaverをインストールしたノートPCを用意します。"),
    ("ACC-101", "Accessible design", "Two hours on designing screens that work with screen readers, large text and colour blindness, using examples from the Tsumugi apps.",
     "アクセシブルなデザイン", "スクリーンリーダー、大きな文字、色覚の多様性に対応した画面の設計を、ツムギアプリの事例を使って2時間で学びます。"),
    ("LDR-301", "Coaching conversations", "Two half-days for managers on holding one-to-one meetings that help people grow, with practice in pairs.",
     "コーチングの対話", "管理職向けの半日×2回の研修で、成長を支える1on1の進め方をペアでの練習を交えて学びます。"),
    ("CUS-101", "Handling difficult calls", "Half a day for support desk staff on calming upset customers and when to hand a call to a supervisor.",
     "難しい電話への対応", "サポート窓口の社員向けの半日研修で、怒っているお客様への対応と、上席に引き継ぐ判断を学びます。"),
    ("PRJ-201", "Project management basics", "One day on planning, estimating and running small projects, with exercises based on a real Tsumugi release.",
     "プロジェクトマネジメントの基礎", "小規模なプロジェクトの計画、見積もり、運営を学ぶ1日の研修で、実際のツムギのリリースを題材にした演習があります。"),
]

# name, category en/ja, who may use en/ja, how to get en/ja
SOFTWARE = [
    ("Visual Studio Code", "code editor", "コードエディター", "all staff", "全社員", "install it yourself from the Software Center", "ソフトウェアセンターから各自でインストールできます"),
    ("Docker Desktop", "container tools", "コンテナツール", "developers and operations staff", "開発者と運用担当者", "request it through the service desk; the company holds a business licence", "サービスデスクに申請してください。会社で法人ライセンスを保有しています"),
    ("Figma", "design tool", "デザインツール", "designers with an editor seat; everyone else can view and comment for free", "編集権限はデザイナーのみ。それ以外の社員は無料で閲覧・コメントできます", "editor seats are requested through the service desk with the design lead's approval", "編集ライセンスはデザインリードの承認を得てサービスデスクに申請します"),
    ("Adobe Acrobat Pro", "PDF editor", "PDF編集ソフト", "staff who need to edit or sign PDFs, such as legal, sales operations and HR", "法務、営業管理、人事など、PDFの編集や署名が必要な社員", "request it through the service desk; the free reader is installed on every laptop", "サービスデスクに申請してください。閲覧用の無料版は全ノートPCにインストール済みです"),
    ("Vaultline", "password manager", "パスワードマネージャー", "all staff", "全社員", "installed on every laptop; sign in with your company account", "全ノートPCにインストール済みで、会社のアカウントでサインインします"),
    ("Kiriko Connect", "VPN client", "VPNクライアント", "all staff", "全社員", "installed on every laptop and managed by IT", "全ノートPCにインストール済みで、情報システム部が管理しています"),
    ("Python", "programming language", "プログラミング言語", "all staff", "全社員", "install it yourself from the Software Center; packages come from the internal mirror", "ソフトウェアセンターから各自でインストールできます。パッケージは社内ミラーから取得します"),
    ("DBeaver", "database client", "データベースクライアント", "developers and analysts", "開発者とアナリスト", "install it from the Software Center; connections to production databases need an approved access request", "ソフトウェアセンターからインストールできます。本番データベースへの接続には承認済みのアクセス申請が必要です"),
    ("Wireshark", "network analyser", "ネットワーク解析ツール", "network and Kiriko Gate engineers", "ネットワークとキリコゲートのエンジニア", "request it through the service desk; capturing traffic on customer networks needs the customer's written consent", "サービスデスクに申請してください。顧客のネットワークで通信を取得するには、顧客の書面による同意が必要です"),
    ("Tableau Desktop", "data visualisation", "データ可視化ツール", "analysts and managers who build dashboards", "ダッシュボードを作成するアナリストと管理職", "request it through the service desk with your manager's approval; viewers use the browser for free", "上長の承認を得てサービスデスクに申請してください。閲覧者はブラウザから無料で見られます"),
    ("Microsoft Visio", "diagram tool", "作図ツール", "staff who maintain network or office diagrams", "ネットワーク図やオフィス図面を管理する社員", "request it through the service desk; for other diagrams use the free diagram tool in the browser", "サービスデスクに申請してください。それ以外の図には、ブラウザで使える無料の作図ツールを使ってください"),
    ("TeraTerm", "terminal emulator", "ターミナルエミュレーター", "Kiriko Gate engineers and support staff", "キリコゲートのエンジニアとサポート担当者", "install it from the Software Center; it is the recommended tool for the console port", "ソフトウェアセンターからインストールできます。コンソールポートの接続に推奨するツールです"),
    ("Zoom", "video conferencing for external meetings", "社外会議用のビデオ会議", "staff whose customers or partners require it", "顧客やパートナーから求められる社員", "a licence is assigned through the service desk; internal meetings use the company conferencing service", "サービスデスクでライセンスを割り当てます。社内の会議は会社のWeb会議サービスを使います"),
    ("Grammarly", "writing assistant", "文章校正ツール", "not approved", "利用不可", "it sends everything you type to an outside service, which the information security policy does not allow", "入力した内容をすべて外部サービスに送信するため、情報セキュリティ規程で認められていません"),
    ("Personal cloud storage", "file storage", "ファイル保存", "not approved for company data", "会社のデータには利用不可", "store company files in the company drive only; personal storage services are blocked on company laptops", "会社のファイルは会社のドライブにのみ保存してください。個人向けのストレージサービスは会社のノートPCでは遮断されています"),
    ("Slack", "chat for shared channels with partners", "パートナーとの共有チャンネル用チャット", "staff who work with partners that use it", "それを使っているパートナーと仕事をする社員", "ask the partner team to invite you to the shared channel; internal chat stays in the company chat service", "パートナーチームに共有チャンネルへの招待を依頼してください。社内のチャットは会社のチャットサービスを使います"),
    ("Git", "version control", "バージョン管理", "all staff", "全社員", "install it yourself from the Software Center; repositories are hosted on the internal code server", "ソフトウェアセンターから各自でインストールできます。リポジトリは社内のコードサーバーにあります"),
    ("Xcode", "iOS development", "iOS開発ツール", "mobile developers", "モバイル開発者", "install it from the App Store on a company Mac; signing certificates are handed out by the mobile apps team", "会社のMacでApp Storeからインストールします。署名用の証明書はモバイルアプリチームが配布します"),
    ("Android Studio", "Android development", "Android開発ツール", "mobile developers", "モバイル開発者", "install it from the Software Center; test devices are borrowed from the device lab in Fukuoka", "ソフトウェアセンターからインストールします。検証端末は福岡のデバイスラボから借ります"),
    ("7-Zip", "file archiver", "ファイル圧縮ツール", "all staff", "全社員", "install it yourself from the Software Center; encrypted archives must not be used to send Confidential files, which go through the company file transfer service", "ソフトウェアセンターから各自でインストールできます。機密ファイルは暗号化アーカイブではなく、会社のファイル転送サービスで送ってください"),
    ("Browser extensions", "browser add-ons", "ブラウザ拡張機能", "only the extensions on the allowed list", "許可リストに載っている拡張機能のみ", "other extensions are blocked; ask the service desk to review one you need", "それ以外の拡張機能は遮断されます。必要なものはサービスデスクに審査を依頼してください"),
    ("Postman", "API testing tool", "APIテストツール", "developers and support engineers", "開発者とサポートエンジニア", "install it from the Software Center; use the team workspace, never a personal one, for requests that contain API tokens", "ソフトウェアセンターからインストールできます。APIトークンを含むリクエストは個人ではなくチームのワークスペースに保存してください"),
]

# team key, en name, ja name, office, en text, ja text
TEAMS = [
    ("service-desk", "IT service desk", "情報システム部 サービスデスク", "tokyo",
     "The service desk handles laptops, accounts, access requests and software for all staff. Requests go through the service desk portal; urgent problems can be phoned in on extension 1999 on weekdays from 8:30 to 19:00.",
     "全社員のノートPC、アカウント、アクセス申請、ソフトウェアを担当します。依頼はサービスデスクのポータルから行い、急ぎの場合は平日8:30～19:00に内線1999へ電話してください。"),
    ("infosec", "Information security team", "情報セキュリティチーム", "tokyo",
     "The information security team runs the security hotline, reviews access to production customer data and handles incidents. The hotline on extension 1110 is answered around the clock.",
     "セキュリティホットラインの運営、本番の顧客データへのアクセスの審査、インシデント対応を担当します。ホットライン（内線1110）は24時間対応です。"),
    ("facilities", "Facilities", "施設管理チーム", "tokyo",
     "Facilities looks after the offices: access cards, meeting rooms, parking bookings, mail and deliveries, and office moves. Each office has its own facilities mailbox.",
     "オフィスの入館カード、会議室、駐車場の予約、郵便・宅配、オフィス移転を担当します。各オフィスに施設管理の窓口アドレスがあります。"),
    ("payroll", "Payroll and benefits", "給与・福利厚生チーム", "tokyo",
     "Payroll and benefits pays salaries on the 25th of each month, handles commuting allowances and the year-end tax adjustment, and answers questions about social insurance.",
     "毎月25日の給与支払い、通勤手当、年末調整、社会保険に関する問い合わせを担当します。"),
    ("talent", "Recruiting and onboarding", "採用・入社チーム", "tokyo",
     "Recruiting and onboarding runs hiring, interviews and the first week of new joiners, including the buddy programme. Interviews in Tokyo are usually held in the Sagi room.",
     "採用活動、面接、新入社員の最初の1週間（バディ制度を含む）を担当します。東京の面接は通常さぎ会議室で行います。"),
    ("support-tokyo", "Tsumugi support desk (Tokyo)", "ツムギ サポート窓口（東京）", "tokyo",
     "The Tokyo support desk answers customers by chat, email and phone. It leads on Enterprise customers and on escalations from the other desks.",
     "チャット、メール、電話でお客様に対応します。エンタープライズプランのお客様と、他拠点からのエスカレーションを主に担当します。"),
    ("support-osaka", "Tsumugi support desk (Osaka)", "ツムギ サポート窓口（大阪）", "osaka",
     "The Osaka support desk shares the customer queue with Tokyo and runs the Saturday service from 10:00 to 15:00. It also holds the administrator training sessions in the Kizu room.",
     "東京と問い合わせキューを共有し、土曜日10:00～15:00の対応を担当しています。木津会議室での管理者トレーニングも開催します。"),
    ("support-backup", "Backup support desk (Sendai)", "バックアップサポート窓口（仙台）", "sendai",
     "The Sendai desk takes over the customer phone lines if the Tokyo and Osaka desks cannot work, for example after an earthquake. It rehearses a full takeover twice a year, in March and September.",
     "地震などで東京と大阪の窓口が稼働できない場合に、お客様の電話回線を引き継ぎます。年2回（3月と9月）、全面的な引き継ぎの訓練を行います。"),
    ("ops-sapporo", "Operations (Sapporo)", "運用チーム（札幌）", "sapporo",
     "The operations team runs the Tsumugi data centres, the monitoring room and the on-call rota. It declares incidents and keeps the status page up to date during them.",
     "ツムギのデータセンター、監視室、オンコール当番を運営します。障害の宣言と、障害中のステータスページの更新を担当します。"),
    ("mobile", "Mobile apps team", "モバイルアプリチーム", "fukuoka",
     "The mobile apps team builds the Tsumugi apps for iPhone and Android. It releases every two weeks, holds sprint reviews in the Genkai room and runs the device lab.",
     "iPhone版とAndroid版のツムギアプリを開発しています。2週間ごとにリリースし、玄界会議室でスプリントレビューを行い、デバイスラボを運営しています。"),
    ("payroll-domain", "Payroll domain team", "給与領域チーム", "tokyo",
     "The payroll domain team owns rounding, premiums and the payroll export in Tsumugi. Every change to those calculations needs the team's review.",
     "ツムギの丸め、割増、給与データ出力を担当します。これらの計算に関わる変更には、必ずこのチームのレビューが必要です。"),
    ("field-eng", "Field engineering (Nagoya)", "フィールドエンジニアリング（名古屋）", "nagoya",
     "The field engineers install Kiriko Gate units at customer sites and replace faulty ones for Kiriko Care customers. The repair centre for returned units is part of the team.",
     "お客様の拠点でキリコゲートを設置し、キリコケアのお客様の故障機を交換します。返送された機器の修理センターもこのチームの一部です。"),
    ("partners-na", "Partner team (Austin)", "パートナーチーム（オースティン）", "austin",
     "The partner team recruits and trains Kiriko Gate channel partners in North America and lends demo units kept in the Brazos room.",
     "北米のキリコゲート販売パートナーの開拓と研修を担当し、ブラゾス会議室に置いたデモ機を貸し出します。"),
    ("localisation", "Localisation (Toronto)", "ローカライズチーム（トロント）", "toronto",
     "The localisation team translates Tsumugi into English and Canadian French and reviews every screen before a release for text that does not fit.",
     "ツムギの英語とカナダフランス語への翻訳を担当し、リリース前にすべての画面で文字のはみ出しがないかを確認します。"),
    ("design", "Product design", "プロダクトデザインチーム", "tokyo",
     "Product design creates the screens of Tsumugi and the Kiriko Gate console and runs usability tests with customers twice a month.",
     "ツムギとキリコゲート管理画面の画面設計を担当し、月2回お客様とのユーザビリティテストを行っています。"),
    ("sales-west", "Sales, western Japan", "西日本営業部", "osaka",
     "The western Japan sales team covers customers from Kansai to Okinawa, except Kyushu, which the Fukuoka office looks after.",
     "関西から沖縄までのお客様を担当します。ただし九州は福岡オフィスが担当します。"),
    ("sales-sea", "Sales, Southeast Asia", "東南アジア営業チーム", "singapore",
     "The Southeast Asia team sells Tsumugi and Kiriko Gate in Singapore, Malaysia, Thailand and Indonesia, and works with local resellers in the Philippines and Vietnam.",
     "シンガポール、マレーシア、タイ、インドネシアでツムギとキリコゲートを販売し、フィリピンとベトナムでは現地の販売店と協力しています。"),
    ("partners-eu", "Partner team (London)", "パートナーチーム（ロンドン）", "london",
     "The London partner team signs and supports Kiriko Gate resellers in Europe and holds partner workshops in the Thames room.",
     "欧州のキリコゲート販売店との契約と支援を担当し、テムズ会議室でパートナー向けワークショップを開催しています。"),
    ("gate-dev", "Kiriko Gate firmware team", "キリコゲート ファームウェアチーム", "tokyo",
     "The firmware team develops Kiriko Gate firmware 3.x and the security fixes for 2.x, and publishes the security advisories numbered KSA-year-number.",
     "キリコゲートのファームウェア3.xと2.xのセキュリティ修正を開発し、KSA-年-番号の形式でセキュリティアドバイザリを公開しています。"),
    ("data", "Data and analytics", "データ分析チーム", "tokyo",
     "The data team maintains the reporting database and the dashboards that management uses, such as active users per plan and support response times.",
     "レポート用データベースと、プラン別のアクティブユーザー数やサポートの応答時間など経営陣が使うダッシュボードを管理しています。"),
    ("legal", "Legal", "法務部", "tokyo",
     "Legal reviews contracts, handles data protection questions and decides on reporting personal data breaches. Contract reviews take about five working days.",
     "契約書の審査、個人情報保護に関する相談、個人データ漏えい時の報告要否の判断を担当します。契約書の審査には約5営業日かかります。"),
    ("finance", "Finance", "経理部", "tokyo",
     "Finance pays expense claims twice a month, on the 10th and the 25th, for claims approved by the end of the previous half-month. It also issues customer invoices.",
     "経費精算を月2回（10日と25日）、前の半月末までに承認された申請について支払います。お客様への請求書も発行します。"),
]

# office -> (staff SSID note en, ja, printing en, ja)
OFFICE_IT = {
    "tokyo": ("Printers are on every floor by the lifts, named TKY-14, TKY-15 and TKY-16. Colour printing is allowed up to 200 pages a month.", "プリンターは各階のエレベーター横にあり、名前はTKY-14、TKY-15、TKY-16です。カラー印刷は月200ページまでです。"),
    "osaka": ("The printer OSA-21 is next to the kitchen. The support desk area has its own printer, OSA-21S, which prints only from support desk laptops.", "プリンターOSA-21は給湯室の横にあります。サポート窓口エリアには専用のOSA-21Sがあり、サポート窓口のノートPCからのみ印刷できます。"),
    "nagoya": ("The printer NGY-09 also prints the shipping labels for returned Kiriko Gate units; keep the label tray loaded.", "プリンターNGY-09は、返送されたキリコゲートの送り状の印刷にも使います。ラベルトレイの用紙を切らさないでください。"),
    "fukuoka": ("The printer FUK-07 is by reception. Printing is rarely needed; the office aims to be paperless.", "プリンターFUK-07は受付の横にあります。オフィスはペーパーレスを目指しており、印刷はほとんど必要ありません。"),
    "sapporo": ("The printer SPK-05 is outside the monitoring room; printouts of the monitoring runbooks are kept in the red binder next to it.", "プリンターSPK-05は監視室の外にあります。その横の赤いバインダーに、監視手順書の印刷版を保管しています。"),
    "sendai": ("The printer SDJ-06 is behind reception, next to the backup desk's cabinet.", "プリンターSDJ-06は受付の裏、バックアップ窓口のキャビネットの隣にあります。"),
    "singapore": ("The printer SIN-18 prints A4 only; ask reception for letter-size paper for US documents.", "プリンターSIN-18はA4専用です。米国向け書類のレターサイズ用紙は受付に依頼してください。"),
    "london": ("The printer LON-03 is shared with the other tenant on the floor; print release with your staff card keeps your pages private.", "プリンターLON-03は同じフロアの別テナントと共用です。社員証による印刷実行で、印刷物を他人に見られないようにしています。"),
    "austin": ("The printer AUS-04 prints on US letter paper by default.", "プリンターAUS-04は標準でUSレターサイズの用紙に印刷します。"),
    "toronto": ("There is no Kiriko printer in Toronto; use the co-working operator's printer with the code given at reception, and do not print Confidential documents there.", "トロントにはキリコのプリンターがありません。受付で案内されるコードを使ってコワーキング事業者のプリンターを利用し、機密文書は印刷しないでください。"),
}

# destination key, en city, ja city, allowance yen per day, hotel limit yen per night
PER_DIEM = [
    ("singapore", "Singapore", "シンガポール", 9000, 28000),
    ("london", "London", "ロンドン", 11000, 32000),
    ("new-york", "New York", "ニューヨーク", 12000, 38000),
    ("austin", "Austin", "オースティン", 9500, 26000),
    ("toronto", "Toronto", "トロント", 9000, 27000),
    ("seoul", "Seoul", "ソウル", 7000, 20000),
    ("taipei", "Taipei", "台北", 6500, 18000),
    ("bangkok", "Bangkok", "バンコク", 6000, 16000),
    ("sydney", "Sydney", "シドニー", 9000, 27000),
    ("paris", "Paris", "パリ", 10500, 30000),
    ("frankfurt", "Frankfurt", "フランクフルト", 10000, 26000),
    ("shanghai", "Shanghai", "上海", 7000, 20000),
    ("ho-chi-minh", "Ho Chi Minh City", "ホーチミン", 5500, 15000),
    ("jakarta", "Jakarta", "ジャカルタ", 5500, 16000),
    ("los-angeles", "Los Angeles", "ロサンゼルス", 11500, 34000),
    ("san-francisco", "San Francisco", "サンフランシスコ", 12000, 40000),
    ("vancouver", "Vancouver", "バンクーバー", 9000, 28000),
    ("hong-kong", "Hong Kong", "香港", 8000, 26000),
    ("kuala-lumpur", "Kuala Lumpur", "クアラルンプール", 5500, 14000),
    ("manila", "Manila", "マニラ", 5000, 14000),
    ("amsterdam", "Amsterdam", "アムステルダム", 10000, 29000),
    ("munich", "Munich", "ミュンヘン", 10000, 27000),
]

# staff questions: key, en q, en a, ja q, ja a
STAFF_FAQ = [
    ("bring-child", "Can I bring my child to the office?", "Children may visit briefly, for example on the family day in August, but cannot stay in the office while you work. Register them as visitors in advance.",
     "子どもをオフィスに連れて行けますか？", "8月のファミリーデーなどの短時間の訪問は可能ですが、勤務中にオフィスで過ごすことはできません。来訪者として事前に登録してください。"),
    ("pay-day", "When is salary paid?", "Salary is paid on the 25th of each month; when the 25th falls on a weekend or holiday, it is paid on the previous business day.",
     "給与はいつ支払われますか？", "毎月25日に支払われます。25日が土日祝日の場合は前営業日に支払われます。"),
    ("expense-pay", "When are approved expenses paid out?", "Finance pays expenses twice a month, on the 10th and the 25th, for claims approved by the end of the previous half-month.",
     "承認された経費はいつ振り込まれますか？", "経理部が月2回（10日と25日）、前の半月末までに承認された申請分を支払います。"),
    ("address-change", "I moved house. What do I need to update?", "Update your address in the HR portal and apply again for the commuting allowance in Tsumugi within a week of the move.",
     "引っ越しました。何を変更すればよいですか？", "人事ポータルで住所を変更し、転居後1週間以内にツムギで通勤手当を申請し直してください。"),
    ("business-cards", "How do I order business cards?", "Order them through the service desk portal under Facilities > Business cards. They arrive in about five working days; rush orders cost extra and need your manager's approval.",
     "名刺はどうやって注文しますか？", "サービスデスクのポータルの「施設」＞「名刺」から注文します。約5営業日で届きます。特急注文は追加料金がかかり、上長の承認が必要です。"),
    ("monitor-home", "Can I get a monitor for working from home?", "Yes, IT provides one external monitor for your home desk or your office desk. A second one needs your manager's approval.",
     "在宅勤務用のモニターをもらえますか？", "はい。情報システム部が自宅またはオフィスの席用に外部モニターを1台支給します。2台目は上長の承認が必要です。"),
    ("health-check", "When is the annual health check?", "The annual health check takes place between May and July at a partner clinic near your office. HR emails the booking link in April; the check is done during working hours.",
     "定期健康診断はいつですか？", "毎年5月から7月に、オフィス近くの提携クリニックで受診します。4月に人事部から予約リンクがメールで届きます。受診は勤務時間中に行えます。"),
    ("referral", "Is there a bonus for referring a candidate?", "Yes. If someone you refer is hired and stays for six months, you receive a referral bonus of 200,000 yen with the following month's salary.",
     "社員紹介の報奨金はありますか？", "あります。紹介した人が採用され6か月在籍すると、翌月の給与とともに紹介報奨金20万円が支払われます。"),
    ("side-job", "May I have a second job?", "Second jobs are allowed with HR's approval, as long as they do not compete with Kiriko and the total working hours stay within the legal limits. Apply through the HR portal.",
     "副業はできますか？", "当社と競合せず、通算の労働時間が法定の範囲内であれば、人事部の承認を得て副業ができます。人事ポータルから申請してください。"),
    ("wifi-guest", "How do visitors get on the Wi-Fi?", "Visitors use the guest network Kiriko-Guest. Its password changes every Monday and is shown on the display at reception.",
     "来客はどうやってWi-Fiに接続しますか？", "来客はゲスト用ネットワークKiriko-Guestを使います。パスワードは毎週月曜日に変わり、受付のディスプレイに表示されます。"),
    ("wifi-staff", "Why can't my phone join the staff Wi-Fi?", "The staff network Kiriko-Staff accepts only company laptops and phones with the Kiriko Work Profile, which hold the certificate it requires. Use Kiriko-Guest for other devices.",
     "スマートフォンが社員用Wi-Fiにつながらないのはなぜですか？", "社員用ネットワークKiriko-Staffは、必要な証明書を持つ会社のノートPCと、Kiriko Work Profileを入れたスマートフォンのみ接続できます。それ以外の端末はKiriko-Guestを使ってください。"),
    ("print-release", "My print job did not come out", "Printing uses print release: the job waits until you hold your staff card to the printer, for up to 24 hours. If nothing appears, check that you sent it to the follow-me queue.",
     "印刷したのに出てきません", "印刷は社員証による印刷実行方式です。プリンターに社員証をかざすまで、最大24時間ジョブが保留されます。表示されない場合は、フォローミーのキューに送ったか確認してください。"),
    ("lost-card", "I lost my staff card", "Report it to reception or Facilities at once so that the card is disabled. A replacement card costs 1,000 yen, deducted from salary, and is ready the next working day.",
     "社員証をなくしました", "すぐに受付または施設管理チームに届け出て、カードを無効にしてください。再発行は1,000円で給与から差し引かれ、翌営業日にでき上がります。"),
    ("umbrella", "Are there umbrellas to borrow?", "Each office keeps spare umbrellas at reception. Return them the next working day.",
     "傘を借りられますか？", "各オフィスの受付に貸し出し用の傘があります。翌営業日に返却してください。"),
    ("bicycle-commute", "Can I commute by bicycle?", "Yes, with the commuting allowance for bicycles, paid by distance. Register the bicycle with Facilities; offices without bicycle parking cannot accept bicycle commuting.",
     "自転車通勤はできますか？", "できます。距離に応じた自転車通勤手当が支給されます。施設管理チームに自転車を登録してください。駐輪場のないオフィスでは自転車通勤は認められません。"),
    ("overtime-meal", "Is dinner paid when I work late?", "When approved overtime runs past 20:00, a meal allowance of 1,000 yen is added to your expenses automatically from your Tsumugi punches.",
     "残業時の夕食代は出ますか？", "承認された残業が20:00を過ぎた場合、ツムギの打刻をもとに1,000円の食事手当が自動で経費に加算されます。"),
    ("family-day", "What is family day?", "Family day is held in the Tokyo and Osaka offices on a Saturday in August. Staff can show their families the office; children get a tour of the monitoring dashboards and a small gift.",
     "ファミリーデーとは何ですか？", "8月の土曜日に東京と大阪のオフィスで開催する、家族にオフィスを見てもらうイベントです。子どもは監視ダッシュボードの見学ができ、記念品がもらえます。"),
    ("parking-visitor", "Can a visitor park at the office?", "It depends on the office: Osaka has two bookable visitor spaces and Austin validates garage tickets, while most other offices have no visitor parking. See the guide of the office concerned.",
     "来客はオフィスに駐車できますか？", "オフィスによって異なります。大阪には予約できる来客用スペースが2台分あり、オースティンでは立体駐車場の駐車券を認証しますが、その他の多くのオフィスには来客用駐車場がありません。各オフィスのガイドを確認してください。"),
    ("payslip", "Where do I find my payslip?", "Payslips are published in the HR portal on the 23rd of each month, two days before pay day. Payslips from the last seven years stay available there.",
     "給与明細はどこで見られますか？", "給与明細は毎月23日、給与支払日の2日前に人事ポータルに掲載されます。過去7年分を閲覧できます。"),
    ("pet", "Can I bring my dog to the office?", "Pets are not allowed in any Kiriko office, except assistance dogs.",
     "犬をオフィスに連れて行けますか？", "補助犬を除き、どのオフィスにもペットは連れて来られません。"),
    ("headset", "My headset broke. How do I get a new one?", "Request a replacement through the service desk portal. Headsets are kept in stock in every office and are usually handed over the same day.",
     "ヘッドセットが壊れました。新しいものはどうやって入手しますか？", "サービスデスクのポータルから交換を申請してください。ヘッドセットは各オフィスに在庫があり、通常は当日に受け取れます。"),
    ("shredding", "How do I dispose of Confidential paper?", "Put it in the locked shredding bins in every office. A contractor empties them every two weeks and shreds the contents on site.",
     "機密文書の紙はどう処分しますか？", "各オフィスにある施錠されたシュレッダー回収箱に入れてください。2週間ごとに業者が回収し、その場で裁断します。"),
    ("anniversary", "Is there anything for long service?", "After ten and twenty years of service you receive five extra days of leave and a travel voucher of 100,000 yen, to be used within two years.",
     "永年勤続の表彰はありますか？", "勤続10年と20年で、5日間の特別休暇と10万円分の旅行券が贈られます。2年以内に使ってください。"),
    ("desk-booking", "How do I book a desk?", "Hot desks in Tokyo are booked in the desk booking app from 14 days ahead; a booking not checked into by 10:30 is released. Other offices have assigned desks.",
     "席はどうやって予約しますか？", "東京のフリーアドレス席は、座席予約アプリで14日前から予約できます。10:30までにチェックインしない予約は解除されます。その他のオフィスは固定席です。"),
]

# questions that exist in one language only: Japanese payroll and insurance matters, and the
# benefits of the overseas offices
STAFF_FAQ_JA_ONLY = [
    ("nencho", "年末調整の書類はいつまでに提出しますか？", "年末調整の書類（扶養控除等申告書、保険料控除申告書など）は、11月20日までに人事ポータルから提出してください。期限までに提出がない場合は、ご自身で翌年に確定申告を行う必要があります。"),
    ("juminzei", "住民税の決定通知書はいつ届きますか？", "住民税の決定通知書は、毎年6月の給与明細とあわせて人事ポータルに掲載されます。紙での受け取りを希望する場合は5月中に給与・福利厚生チームへ連絡してください。"),
    ("fuyo", "家族を健康保険の扶養に入れるには？", "結婚や出産などの事実が発生してから5日以内に、人事ポータルの「扶養異動」から申請してください。続柄を確認できる書類と、配偶者の場合は収入がわかる書類が必要です。"),
    ("teiki", "退職や転居のとき、通勤定期はどうすればよいですか？", "通勤定期券は払い戻しを受け、払戻金と未使用期間分の手当の差額を翌月の給与で精算します。払い戻しの証明書は人事ポータルにアップロードしてください。"),
    ("ikukyu", "育児休業はいつまでに申請しますか？", "育児休業は開始予定日の1か月前までに人事ポータルから申請してください。育児休業給付金の手続きは人事部が代行します。"),
    ("kenshin-saiken", "健康診断で再検査になりました", "再検査の費用は、健康保険組合の補助を差し引いた自己負担分を会社が負担します。領収書をツムギで経費として申請してください。再検査は勤務時間中に受けられます。"),
]
STAFF_FAQ_EN_ONLY = [
    ("401k", "Does Kiriko match 401(k) contributions?", "Employees in the US can join the 401(k) plan from their first day. Kiriko Systems America matches 100% of the first 4% of salary you contribute, and the match vests immediately."),
    ("pension-uk", "How does the workplace pension work in the UK?", "UK employees are enrolled automatically in the workplace pension. Kiriko contributes 5% of salary and you contribute 5%; you can opt out within one month of being enrolled and rejoin later."),
    ("cpf-medical", "What medical cover do employees in Singapore have?", "Besides the CPF contributions required by law, employees in Singapore are covered by a group medical insurance that includes their spouse and children, with outpatient visits at panel clinics free of charge."),
    ("rrsp", "Is there a retirement plan in Canada?", "Employees in Canada can join the group RRSP. Kiriko matches contributions up to 3% of salary from the first month."),
    ("i9", "What do new hires in the US need to bring?", "New employees in the US complete Form I-9 and must show the original identity and work authorisation documents within three business days of their start date."),
    ("right-to-work", "What is the right-to-work check in the UK?", "Before your first day in the UK, HR checks your right to work, usually with a share code from the government's online service. You cannot start work until the check is complete."),
]


def build(c):
    for country, (en_t, en_x, ja_t, ja_x) in LEAVE.items():
        c.add(FILE["en"], "en", "leave", country, en_t, en_x, category="policy", country=country)
        c.add(FILE["ja"], "ja", "leave", country, ja_t, ja_x, category="policy", country=country)
    for code, en_t, en_x, ja_t, ja_x in COURSES:
        c.add(FILE["en"], "en", "course", code.lower(), f"Training {code}: {en_t}", en_x, category="training")
        c.add(FILE["ja"], "ja", "course", code.lower(), f"研修 {code}：{ja_t}", ja_x, category="training")
    for name, cat_en, cat_ja, who_en, who_ja, how_en, how_ja in SOFTWARE:
        key = name.lower().replace(" ", "-")
        r = rng_for("sw", key)
        approved = not who_en.startswith("not approved")
        en = pick(r, f"{name} ({cat_en}). Who may use it: {who_en}. How to get it: {how_en}.",
                  f"{name} is on the software list as a {cat_en}. It may be used by {who_en}; {how_en}.") if approved else \
            f"{name} ({cat_en}) is {who_en}: {how_en}."
        ja = f"{name}（{cat_ja}）。利用できる人：{who_ja}。入手方法：{how_ja}。" if approved else \
            f"{name}（{cat_ja}）は{who_ja}です。{how_ja}。"
        c.add(FILE["en"], "en", "sw", key, f"Software list: {name}", en, category="software")
        c.add(FILE["ja"], "ja", "sw", key, f"ソフトウェア一覧：{name}", ja, category="software")
    from .offices import OFFICES
    for key, en_t, ja_t, office, en_x, ja_x in TEAMS:
        o = OFFICES[office]
        c.add(FILE["en"], "en", "team", key, f"Team page: {en_t}", f"{en_x} Based at the {o['en']}.",
              category="team", office=office)
        c.add(FILE["ja"], "ja", "team", key, f"チーム紹介：{ja_t}", f"{ja_x}拠点：{o['ja']}。",
              category="team", office=office)
    for office, (en_p, ja_p) in OFFICE_IT.items():
        o = OFFICES[office]
        c.add(FILE["en"], "en", "print", office, f"Printing at the {o['en']}",
              f"{en_p} All printers use print release: send the job to the follow-me queue and hold your staff card to any printer in the office to print it.",
              category="it", office=office)
        c.add(FILE["ja"], "ja", "print", office, f"{o['ja']}の印刷",
              f"{ja_p}すべてのプリンターで社員証による印刷実行を採用しています。フォローミーのキューに送信し、オフィス内のどのプリンターでも社員証をかざせば印刷されます。",
              category="it", office=office)
    for key, city_en, city_ja, allowance, hotel in PER_DIEM:
        c.add(FILE["en"], "en", "perdiem", key, f"Business travel allowance: {city_en}",
              f"For business trips to {city_en}, the daily allowance is {allowance:,} yen for each day away and the hotel limit is {hotel:,} yen a night, including tax. The allowance covers meals and incidental costs; book hotels through TripDesk.",
              category="travel", destination=key)
        c.add(FILE["ja"], "ja", "perdiem", key, f"出張旅費：{city_ja}",
              f"{city_ja}への出張の日当は1日{allowance:,}円、宿泊費の上限は1泊{hotel:,}円（税込）です。日当は食事代と雑費を含みます。ホテルはTripDeskで予約してください。",
              category="travel", destination=key)
    for key, en_q, en_a, ja_q, ja_a in STAFF_FAQ:
        c.add(STAFF_FAQ_FILE["en"], "en", "staff", key, en_q, en_a, category="staff-faq")
        c.add(STAFF_FAQ_FILE["ja"], "ja", "staff", key, ja_q, ja_a, category="staff-faq")
    for key, q, a in STAFF_FAQ_JA_ONLY:
        c.add(STAFF_FAQ_FILE["ja"], "ja", "staff", key, q, a, category="staff-faq")
    for key, q, a in STAFF_FAQ_EN_ONLY:
        c.add(STAFF_FAQ_FILE["en"], "en", "staff", key, q, a, category="staff-faq")
