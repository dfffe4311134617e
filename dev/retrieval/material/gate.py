"""Kiriko Gate, the branch-office gateway: specification sheets, procedures that differ between
firmware 2.x and 3.x, accessories, and one long user guide per model."""

from .corpus import pick, rng_for

KB = {"en": "kb-en.json", "ja": "kb-ja.json"}
MANUAL = {"en": "handbook-en.json", "ja": "handbook-ja.json"}

MODELS = {
    "kg-110": dict(
        name="KG-110", lan="4 × 1GbE LAN, 1 × 1GbE WAN", lan_ja="1GbE LAN×4、1GbE WAN×1",
        fw="900 Mbps", vpn="250 Mbps", tunnels=10, cooling_en="fanless", cooling_ja="ファンレス",
        power_en="external 12 V DC adapter, 8 W at most", power_ja="外付け12V DCアダプター、最大8W",
        size="180 × 120 × 30 mm", weight_en="450 g", weight_ja="450g", temp="0–40 °C", temp_ja="0～40℃",
        use_en="small offices and shops of up to about 15 people", use_ja="15名程度までの小規模オフィスや店舗",
    ),
    "kg-210": dict(
        name="KG-210", lan="8 × 1GbE LAN (4 with PoE+), 2 × 1GbE WAN", lan_ja="1GbE LAN×8（うち4ポートPoE+）、1GbE WAN×2",
        fw="2 Gbps", vpn="600 Mbps", tunnels=50, cooling_en="fanless", cooling_ja="ファンレス",
        power_en="internal 100–240 V power supply, 90 W at most with full PoE load", power_ja="内蔵電源（AC100～240V）、PoE最大負荷時90W",
        size="260 × 180 × 44 mm", weight_en="1.6 kg", weight_ja="1.6kg", temp="0–40 °C", temp_ja="0～40℃",
        use_en="branch offices of up to about 60 people that power access points or cameras from the gateway", use_ja="アクセスポイントやカメラにゲートウェイから給電する、60名程度までの支店",
    ),
    "kg-310": dict(
        name="KG-310", lan="4 × 1GbE LAN, 1 × 1GbE WAN, built-in LTE Cat 12 modem (nano-SIM)", lan_ja="1GbE LAN×4、1GbE WAN×1、LTE Cat 12モデム内蔵（nanoSIM）",
        fw="1.5 Gbps", vpn="400 Mbps", tunnels=30, cooling_en="fanless", cooling_ja="ファンレス",
        power_en="external 12 V DC adapter, 15 W at most", power_ja="外付け12V DCアダプター、最大15W",
        size="200 × 140 × 34 mm", weight_en="700 g", weight_ja="700g", temp="0–40 °C", temp_ja="0～40℃",
        use_en="sites that need a mobile backup line, or that have no wired line at all", use_ja="モバイル回線によるバックアップが必要な拠点や、有線回線のない拠点",
    ),
    "kg-510": dict(
        name="KG-510", lan="8 × 1GbE LAN, 2 × 10G SFP+, 2 × 1GbE WAN", lan_ja="1GbE LAN×8、10G SFP+×2、1GbE WAN×2",
        fw="10 Gbps", vpn="3 Gbps", tunnels=500, cooling_en="hot-swappable fan module", cooling_ja="ホットスワップ対応ファンモジュール",
        power_en="two hot-swappable power supplies, 150 W at most", power_ja="ホットスワップ対応の二重化電源、最大150W",
        size="440 × 300 × 44 mm (1U)", weight_en="5.2 kg", weight_ja="5.2kg", temp="0–45 °C", temp_ja="0～45℃",
        use_en="head offices and data centres that terminate VPN tunnels from many branches", use_ja="多数の拠点からのVPNを集約する本社やデータセンター",
    ),
}

# procedure -> firmware line -> (en title, en text, ja title, ja text)
PROCEDURES = {
    "factory-reset": {
        "2x": ("Factory reset (firmware 2.x)",
               "With the unit powered on, press and hold the RESET button with a pin for 10 seconds, until all LEDs blink green together. Release the button. The gateway erases its configuration and restarts with factory settings, which takes about three minutes. The Kiriko Gate Cloud registration is erased as well, so the unit has to be registered again.",
               "工場出荷時の状態に戻す（ファームウェア2.x）",
               "電源が入った状態で、RESETボタンをピンで10秒間押し続け、すべてのランプが緑色で一斉に点滅したら離します。設定が消去され、工場出荷時の設定で再起動します（約3分）。キリコゲートクラウドへの登録も消去されるため、再登録が必要です。"),
        "3x": ("Factory reset (firmware 3.x)",
               "Firmware 3.x gives the RESET button two functions. Holding it for 5 seconds only restarts the unit. Holding it for 15 seconds, until the STATUS LED blinks amber, resets it to factory settings. You can also reset from the console under System > Maintenance > Factory reset, which asks whether to keep the Kiriko Gate Cloud registration so that the unit picks up its template again by itself.",
               "工場出荷時の状態に戻す（ファームウェア3.x）",
               "ファームウェア3.xではRESETボタンに2つの機能があります。5秒間押すと再起動のみ、STATUSランプが橙色に点滅するまで15秒間押すと工場出荷時の設定に戻ります。管理画面の「システム」＞「メンテナンス」＞「初期化」からも実行でき、その場合はキリコゲートクラウドへの登録を残すかどうかを選べるため、登録を残せば機器が自動でテンプレートを再適用します。"),
    },
    "firmware-update": {
        "2x": ("Updating the firmware (firmware 2.x)",
               "Download the .kfw file for your model from the support site. In the console, open System > Firmware, choose Upload and select the file. The update takes about eight minutes and the unit restarts once; do not switch it off meanwhile, because firmware 2.x has only one firmware bank and an interrupted update leaves the unit unable to start. Firmware 2.x cannot update itself automatically.",
               "ファームウェアを更新する（ファームウェア2.x）",
               "サポートサイトからモデル用の.kfwファイルをダウンロードします。管理画面の「システム」＞「ファームウェア」で「アップロード」を選び、ファイルを指定します。更新には約8分かかり、途中で1回再起動します。2.xはファームウェア領域が1つしかないため、更新中に電源を切ると起動できなくなります。2.xには自動更新機能はありません。"),
        "3x": ("Updating the firmware (firmware 3.x)",
               "Open System > Firmware and choose Check for updates; the gateway downloads the signed image itself. To update automatically, set a maintenance window, for example Sundays at 3:00. Firmware 3.x keeps two firmware banks: if the new firmware fails to start three times in a row, the unit starts the previous firmware again and reports it in the log.",
               "ファームウェアを更新する（ファームウェア3.x）",
               "「システム」＞「ファームウェア」で「更新を確認」を選ぶと、署名付きイメージを機器が直接ダウンロードします。自動更新するには、日曜3:00などのメンテナンス時間帯を設定します。3.xはファームウェア領域を2つ持ち、新しいファームウェアが3回続けて起動に失敗すると、以前のファームウェアで起動し直してログに記録します。"),
    },
    "backup": {
        "2x": ("Backing up and restoring the configuration (firmware 2.x)",
               "Under System > Backup choose Download to save the configuration as a .cfg file. The file is encrypted with the unit's serial number, so it can be restored only on the same unit; to move a configuration to a replacement unit, ask support to convert it.",
               "設定のバックアップと復元（ファームウェア2.x）",
               "「システム」＞「バックアップ」で「ダウンロード」を選ぶと、設定を.cfgファイルとして保存できます。ファイルは本体のシリアル番号で暗号化されるため、同じ機器にしか復元できません。交換機に設定を移す場合は、サポートに変換を依頼してください。"),
        "3x": ("Backing up and restoring the configuration (firmware 3.x)",
               "Under System > Backup choose Download and enter a passphrase; the backup can be restored on any unit of the same model with that passphrase. Units registered with Kiriko Gate Cloud are also backed up to the cloud every day, and the last 30 backups are kept there.",
               "設定のバックアップと復元（ファームウェア3.x）",
               "「システム」＞「バックアップ」で「ダウンロード」を選び、パスフレーズを入力します。バックアップは、そのパスフレーズがあれば同じモデルのどの機器にも復元できます。キリコゲートクラウドに登録した機器は毎日クラウドにもバックアップされ、直近30世代が保存されます。"),
    },
    "password-recovery": {
        "2x": ("Recovering a lost admin password (firmware 2.x)",
               "Firmware 2.x has no way to recover a lost admin password. The only way back in is a factory reset, after which you restore a configuration backup, if you have one.",
               "管理者パスワードを忘れた場合（ファームウェア2.x）",
               "ファームウェア2.xには管理者パスワードを回復する方法がありません。工場出荷時の状態に戻し、バックアップがあれば設定を復元してください。"),
        "3x": ("Recovering a lost admin password (firmware 3.x)",
               "Connect the USB-C console cable to the CONSOLE port and open a terminal at 115200 bps. Restart the unit and press r within five seconds when the boot menu appears. Enter the recovery code printed on the label under the unit and set a new password. The configuration is kept.",
               "管理者パスワードを忘れた場合（ファームウェア3.x）",
               "USB-CコンソールケーブルをCONSOLEポートにつなぎ、115200bpsでターミナルを開きます。機器を再起動し、起動メニューが表示されたら5秒以内にrキーを押します。本体底面のラベルに記載されたリカバリーコードを入力し、新しいパスワードを設定します。設定はそのまま残ります。"),
    },
    "site-vpn": {
        "2x": ("Setting up a site-to-site VPN (firmware 2.x)",
               "Firmware 2.x supports IKEv1 with pre-shared keys only. Under VPN > IPsec add a peer, enter its address, the pre-shared key and the local and remote subnets, and choose AES-128 or AES-256 in CBC mode. Dead peer detection checks the peer every 30 seconds and takes the tunnel down after three missed answers.",
               "拠点間VPNを設定する（ファームウェア2.x）",
               "ファームウェア2.xは、事前共有鍵によるIKEv1のみに対応しています。「VPN」＞「IPsec」で対向を追加し、アドレス、事前共有鍵、ローカルとリモートのサブネットを入力し、暗号方式にAES-128またはAES-256（CBCモード）を選びます。デッドピア検出は30秒ごとに対向を確認し、3回応答がないとトンネルを切断します。"),
        "3x": ("Setting up a site-to-site VPN (firmware 3.x)",
               "Firmware 3.x uses IKEv2 by default and keeps IKEv1 for older peers. Peers can authenticate with certificates as well as pre-shared keys, and AES-256-GCM is the default cipher. Route-based tunnels with a virtual tunnel interface let you run dynamic routing over the VPN instead of listing subnets.",
               "拠点間VPNを設定する（ファームウェア3.x）",
               "ファームウェア3.xは標準でIKEv2を使い、古い対向向けにIKEv1も残しています。事前共有鍵に加えて証明書による認証ができ、標準の暗号方式はAES-256-GCMです。仮想トンネルインターフェースによるルートベースVPNを使えば、サブネットを列挙する代わりにVPN上で動的ルーティングを使えます。"),
    },
    "lte-failover": {
        "2x": ("LTE failover (firmware 2.x)",
               "In firmware 2.x the gateway switches to LTE only when the WAN port loses its physical link. A line that is up but not passing traffic does not trigger failover. Traffic returns to the wired line 60 seconds after the link comes back.",
               "LTEフェイルオーバー（ファームウェア2.x）",
               "ファームウェア2.xでは、WANポートの物理リンクが切れたときにのみLTEへ切り替わります。リンクは上がっているのに通信できない状態では切り替わりません。リンク復旧から60秒後に有線回線へ戻ります。"),
        "3x": ("LTE failover (firmware 3.x)",
               "Firmware 3.x checks the wired line by sending a ping every 10 seconds to a target you choose, by default the Kiriko Gate Cloud endpoint. After three failures in a row it fails over to LTE. It returns to the wired line once that line has answered without a loss for five minutes. A monthly data allowance can be set so that you are alerted at 80% of it.",
               "LTEフェイルオーバー（ファームウェア3.x）",
               "ファームウェア3.xは、指定した宛先（初期値はキリコゲートクラウドのエンドポイント）に10秒ごとにpingを送って有線回線を監視し、3回続けて失敗するとLTEに切り替えます。有線回線が5分間欠損なく応答すると元に戻ります。月間データ量の上限を設定すると、80%に達した時点でアラートが出ます。"),
    },
}

# sku, models it fits, price in yen, en (name, note), ja (name, note)
ACCESSORIES = [
    ("KA-RM1", "KG-210", 12000, ("19-inch rack mount kit", "A 1U shelf that holds one KG-210 in a standard rack."), ("19インチラックマウントキット", "KG-210を1台、標準ラックに収める1Uの棚板です。")),
    ("KA-WM1", "KG-110, KG-310", 3500, ("Wall mount bracket", "Mounts the unit on a wall with its ports facing down, away from dust."), ("壁掛けブラケット", "ポートを下向きにして壁に取り付け、ほこりが入りにくくします。")),
    ("KA-ANT3", "KG-310", 18000, ("External LTE antenna kit", "Two antennas on a magnetic base with 3-metre cables, for sites where the built-in signal is weak."), ("外部LTEアンテナキット", "3メートルケーブル付きのマグネット台座アンテナ2本組で、内蔵アンテナでは電波が弱い場所向けです。")),
    ("KA-USB4", "KG-110, KG-210, KG-510", 24000, ("USB LTE modem", "Adds an LTE backup line to models without a built-in modem. Requires firmware 3.2 or later."), ("USB LTEモデム", "モデムを内蔵していないモデルにLTEバックアップ回線を追加します。ファームウェア3.2以降が必要です。")),
    ("KA-PSU5", "KG-510", 45000, ("Spare power supply module", "A hot-swappable power supply for the KG-510."), ("予備電源ユニット", "KG-510用のホットスワップ対応電源ユニットです。")),
    ("KA-FAN5", "KG-510", 15000, ("Fan module", "The replacement fan module for the KG-510."), ("ファンモジュール", "KG-510用の交換ファンモジュールです。")),
    ("KA-SFP10SR", "KG-510", 28000, ("10G SFP+ SR module", "A short-range multimode optical module for the KG-510's SFP+ ports, up to 300 m."), ("10G SFP+ SRモジュール", "KG-510のSFP+ポート用の短距離マルチモード光モジュールで、最大300mです。")),
    ("KA-CON1", "all models on firmware 3.x", 2000, ("USB-C console cable", "A 1.8-metre cable for the CONSOLE port, used for password recovery and troubleshooting."), ("USB-Cコンソールケーブル", "CONSOLEポート用の1.8メートルのケーブルで、パスワード回復や障害調査に使います。")),
    ("KA-ADP12", "KG-110, KG-310", 4000, ("12 V AC adapter", "A replacement adapter with a 1.5-metre cord."), ("12V ACアダプター", "1.5メートルのコードが付いた交換用アダプターです。")),
    ("KA-SFP1LX", "KG-510", 21000, ("1G SFP LX module", "A single-mode optical module for 1 Gbps links of up to 10 km in the KG-510's SFP+ ports."), ("1G SFP LXモジュール", "KG-510のSFP+ポート用のシングルモード光モジュールで、最大10kmの1Gbpsリンクに使います。")),
    ("KA-DAC1", "KG-510", 6000, ("10G direct attach cable, 1 m", "Connects a KG-510 to a switch in the same rack without optical modules."), ("10Gダイレクトアタッチケーブル（1m）", "光モジュールを使わずに、同じラック内のスイッチとKG-510を接続します。")),
    ("KA-RAIL5", "KG-510", 9000, ("Sliding rail kit", "Replaces the fixed rails in the box so that the KG-510 can slide out of the rack for service."), ("スライドレールキット", "付属の固定レールと交換し、保守時にKG-510をラックから引き出せるようにします。")),
    ("KA-CARE5", "all models", 0, ("Kiriko Care", "Extends the warranty of a unit to five years and adds next-business-day replacement; priced per model."), ("キリコケア", "機器の保証を5年に延長し、翌営業日の代替機発送を追加します。価格はモデルごとに異なります。")),
    ("KA-UPS1", "KG-110, KG-310", 22000, ("Mini DC UPS", "Keeps a KG-110 running for about three hours, or a KG-310 for about two, during a power cut."), ("ミニDC UPS", "停電時にKG-110を約3時間、KG-310を約2時間動かし続けます。")),
]

# model guide: model -> list of (en heading, en text, ja heading, ja text) for the sections that
# differ between models; the rest is shared
GUIDE = {
    "kg-110": [
        ("Placement", "Place the KG-110 on a desk or mount it on a wall with the KA-WM1 bracket. Because it is fanless, leave at least 5 cm free on each side and do not stack other equipment on it.",
         "設置", "KG-110は机上に置くか、KA-WM1ブラケットで壁に取り付けます。ファンレスのため、左右に5cm以上の空間を空け、上に他の機器を重ねないでください。"),
        ("Power", "The KG-110 is powered by the 12 V adapter in the box. It does not supply PoE.",
         "電源", "付属の12Vアダプターで給電します。PoE給電には対応していません。"),
        ("Hardware revisions", "Two hardware revisions of the KG-110 exist. Revision A, whose serial numbers begin with 11A, was sold until 2021 and can run firmware 2.x only. Revision B, with serial numbers beginning with 11B, runs firmware 3.x. The revision is also printed on the label under the unit.",
         "ハードウェアリビジョン", "KG-110には2つのハードウェアリビジョンがあります。シリアル番号が11Aで始まるリビジョンAは2021年まで販売され、ファームウェア2.xのみ動作します。11Bで始まるリビジョンBはファームウェア3.xで動作します。リビジョンは本体底面のラベルにも記載されています。"),
    ],
    "kg-210": [
        ("Placement", "The KG-210 can stand on a desk or be fitted in a 19-inch rack with the KA-RM1 rack mount kit. Keep 10 cm free above the unit; it is fanless and its top cover is the heat sink.",
         "設置", "KG-210は机上に置くか、KA-RM1ラックマウントキットで19インチラックに収めます。ファンレスで天板が放熱板を兼ねているため、上部に10cm以上の空間を空けてください。"),
        ("Power", "The KG-210 has an internal power supply and takes a standard AC cord.",
         "電源", "電源を内蔵しており、標準のACコードで接続します。"),
        ("PoE budget", "LAN ports 1 to 4 supply PoE+ with a total budget of 60 W. When the devices ask for more than that, the gateway powers the lowest-numbered ports first and turns off port 4, then port 3, until the load fits. Plug the device that matters most, usually the main access point, into port 1.",
         "PoE給電量", "LANポート1～4はPoE+に対応し、合計給電量は60Wです。接続機器の要求がこれを超えると、番号の小さいポートを優先し、収まるまでポート4、ポート3の順に給電を止めます。最も重要な機器（通常はメインのアクセスポイント）はポート1に接続してください。"),
    ],
    "kg-310": [
        ("Placement", "Put the KG-310 where the mobile signal is best, often near a window, and keep it at least 20 cm away from other radio equipment. It can stand on a desk or be mounted on a wall with the KA-WM1 bracket.",
         "設置", "KG-310はモバイル回線の電波が最もよい場所（多くは窓際）に置き、他の無線機器から20cm以上離してください。机上に置くか、KA-WM1ブラケットで壁に取り付けます。"),
        ("Power", "The KG-310 is powered by the 12 V adapter in the box. The KA-UPS1 mini UPS keeps it running for about two hours in a power cut.",
         "電源", "付属の12Vアダプターで給電します。KA-UPS1ミニUPSを使うと、停電時も約2時間動作します。"),
        ("SIM card and antennas", "The KG-310 takes a nano-SIM. Switch the unit off, open the cover on the back, and insert the card with its cut corner towards the antenna connectors. Screw the two antennas from the box onto the LTE connectors; if the signal shown in the console is weak, replace them with the KA-ANT3 external antenna kit. The modem supports LTE bands 1, 3, 8, 18, 19, 26, 28 and 41.",
         "SIMカードとアンテナ", "KG-310はnanoSIMを使います。電源を切ってから背面のカバーを開け、切り欠きをアンテナ端子側に向けてカードを挿入します。付属のアンテナ2本をLTE端子に取り付け、管理画面に表示される電波が弱い場合はKA-ANT3外部アンテナキットに交換してください。対応LTEバンドは1、3、8、18、19、26、28、41です。"),
    ],
    "kg-510": [
        ("Placement", "The KG-510 is a 1U rack unit. Mount it with the rails in the box; air flows from front to back, so keep the rear of the rack clear. It weighs 5.2 kg, so two people should fit it.",
         "設置", "KG-510は1Uのラック機器です。付属のレールで取り付けます。空気は前面から背面へ流れるため、ラック背面をふさがないでください。重量が5.2kgあるため、2人で取り付けてください。"),
        ("Power", "The KG-510 has two power supplies; connect each to a different circuit so that the unit keeps running if one circuit fails.",
         "電源", "KG-510は電源ユニットを2台備えています。片方の系統に障害が起きても動作を続けられるよう、それぞれ別の電源系統に接続してください。"),
        ("Replacing the fan and power supply modules", "Both power supplies and the fan module can be replaced while the unit is running. Pull the failed power supply out by its handle and push the new one in until it clicks; its LED turns green within ten seconds. When replacing the fan module, insert the new one within two minutes of removing the old: after two minutes without a fan the unit shuts down to protect itself.",
         "ファンと電源ユニットの交換", "電源ユニット2台とファンモジュールは、稼働中に交換できます。故障した電源ユニットはハンドルを持って引き抜き、新しいものをカチッと音がするまで差し込みます。10秒以内にランプが緑色になります。ファンモジュールを交換するときは、古いモジュールを抜いてから2分以内に新しいモジュールを差し込んでください。ファンのない状態が2分を超えると、保護のため本体が停止します。"),
    ],
}


def _spec(lang, m):
    if lang == "en":
        return (f"Kiriko Gate {m['name']} specifications",
                f"The {m['name']} is designed for {m['use_en']}.\n"
                f"Ports: {m['lan']}\nFirewall throughput: {m['fw']}\nIPsec VPN throughput: {m['vpn']}\n"
                f"IPsec tunnels: up to {m['tunnels']}\nCooling: {m['cooling_en']}\nPower: {m['power_en']}\n"
                f"Dimensions: {m['size']}, weight {m['weight_en']}\nOperating temperature: {m['temp']}")
    return (f"キリコゲート {m['name']} 仕様",
            f"{m['name']}は{m['use_ja']}向けのモデルです。\n"
            f"ポート：{m['lan_ja']}\nファイアウォールスループット：{m['fw']}\nIPsec VPNスループット：{m['vpn']}\n"
            f"IPsecトンネル数：最大{m['tunnels']}\n冷却：{m['cooling_ja']}\n電源：{m['power_ja']}\n"
            f"外形寸法：{m['size']}、質量{m['weight_ja']}\n動作温度：{m['temp_ja']}")


def _guide(lang, key, m):
    r = rng_for("guide", key, lang)
    warranty_en = "three years" if key == "kg-510" else "one year"
    warranty_ja = "3年間" if key == "kg-510" else "1年間"
    specific = GUIDE[key]
    if lang == "en":
        title = f"Kiriko Gate {m['name']} user guide"
        parts = [
            f"This guide covers installing and looking after the Kiriko Gate {m['name']}, a gateway for {m['use_en']}. Configuration of the firewall, VPN and other features is described in the administration guide for your firmware version.",
            "In the box.\n" + pick(r, f"The gateway, {'two rack rails and screws' if key == 'kg-510' else 'the power adapter' if key in ('kg-110', 'kg-310') else 'an AC power cord'}, a 1.5-metre LAN cable, the quick start sheet and the safety leaflet. Keep the box until the unit has run for a week; it is the safest way to send the unit back if it is faulty.",
                                   f"You should find the gateway, a LAN cable of 1.5 metres, the quick start sheet, the safety leaflet and {'the rack rails with their screws' if key == 'kg-510' else 'the power adapter' if key in ('kg-110', 'kg-310') else 'an AC power cord'}. Keep the packaging for at least a week in case the unit has to go back."),
            specific[0][0] + ".\n" + specific[0][1] + f" The operating temperature range is {m['temp']}; avoid direct sunlight and places where condensation forms.",
            "Ports.\n" + f"{m['name']}: {m['lan']}. Connect the line from your provider's modem or optical network unit to the WAN port and your office switch or computers to the LAN ports. The CONSOLE port is used only for recovery and troubleshooting.",
            "LED indicators.\n" + "POWER is green while the unit has power. STATUS blinks green while the unit starts, is steady green when it is running normally, is steady amber when the console shows an error, and is red for a hardware fault; call support if it stays red after a restart. WAN is green when the WAN port has a link and blinks with traffic." + (" LTE shows the mobile signal: green for good, amber for weak and off when no SIM is detected." if key == "kg-310" else "") + (" PSU1 and PSU2 show the state of each power supply." if key == "kg-510" else ""),
            specific[1][0] + ".\n" + specific[1][1] + f" Power: {m['power_en']}.",
            specific[2][0] + ".\n" + specific[2][1],
            "Safety.\n" + "Use only the power adapter or cord supplied with the unit, and connect it to an earthed outlet. Do not open the case: there are no parts inside that you can service, and opening it voids the warranty. Unplug the unit during thunderstorms if the building has no surge protection, and never connect a WAN cable that runs outdoors without a lightning arrester.",
            "Cleaning and maintenance.\n" + pick(r, "Wipe the unit with a dry cloth and remove dust from the vents every six months; never use solvents or compressed air into the ports.",
                                               "Every six months, dust the vents and wipe the case with a dry cloth. Do not use solvents, and do not blow compressed air into the ports."),
            "Warranty.\n" + f"The {m['name']} is covered for {warranty_en} from the date of purchase. Faulty units are repaired or replaced through the RMA process; keep the proof of purchase.",
            "Disposal.\n" + "At the end of its life, erase the configuration with a factory reset and return the unit to Kiriko for recycling free of charge; request a collection label from support. Do not put it in household or office waste.",
        ]
    else:
        title = f"キリコゲート {m['name']} ユーザーガイド"
        parts = [
            f"本書では、{m['use_ja']}向けのゲートウェイであるキリコゲート{m['name']}の設置と取り扱いについて説明します。ファイアウォールやVPNなどの設定は、ファームウェアのバージョンごとの管理者ガイドを参照してください。",
            "■同梱品\n" + f"本体、{'ラックレールとねじ' if key == 'kg-510' else '電源アダプター' if key in ('kg-110', 'kg-310') else 'ACコード'}、1.5メートルのLANケーブル、クイックスタートガイド、安全上の注意。故障時に返送する際に最も安全なため、1週間ほど問題なく動作するまで箱は保管してください。",
            "■" + specific[0][2] + "\n" + specific[0][3] + f"動作温度は{m['temp_ja']}です。直射日光の当たる場所や結露する場所は避けてください。",
            "■ポート\n" + f"{m['name']}：{m['lan_ja']}。プロバイダのモデムまたはONUからの回線をWANポートに、社内のスイッチやパソコンをLANポートに接続します。CONSOLEポートは回復作業と障害調査にのみ使います。",
            "■ランプ表示\n" + "POWERは通電中に緑色に点灯します。STATUSは起動中に緑色点滅、正常動作中に緑色点灯、管理画面にエラーが表示されているときは橙色点灯、ハードウェア障害では赤色になります。再起動しても赤色のままならサポートに連絡してください。WANはリンク確立時に緑色に点灯し、通信中は点滅します。" + ("LTEはモバイル回線の電波状態を示し、良好なら緑、弱いと橙、SIM未検出で消灯します。" if key == "kg-310" else "") + ("PSU1とPSU2は各電源ユニットの状態を示します。" if key == "kg-510" else ""),
            "■" + specific[1][2] + "\n" + specific[1][3] + f"電源仕様：{m['power_ja']}。",
            "■" + specific[2][2] + "\n" + specific[2][3],
            "■安全上の注意\n" + "付属の電源アダプターまたは電源コードのみを使い、アース付きのコンセントに接続してください。ケースは開けないでください。内部にお客様が修理できる部品はなく、開けると保証の対象外になります。建物に雷サージ対策がない場合は雷雨の間は電源を抜き、屋外を通るWANケーブルは避雷器を介さずに接続しないでください。",
            "■お手入れ\n" + "半年に1回、通気口のほこりを取り除き、乾いた布で拭いてください。溶剤は使わず、ポートにエアダスターを吹き付けないでください。",
            "■保証\n" + f"{m['name']}の保証期間はご購入日から{warranty_ja}です。故障した場合はRMAの手続きにより修理または交換します。購入を証明する書類を保管してください。",
            "■廃棄\n" + "使用を終えた機器は、工場出荷時の状態に戻して設定を消去したうえで、キリコに返送してください。無料でリサイクルします。回収用の送り状はサポートに依頼してください。家庭ごみや事業ごみとして捨てないでください。",
        ]
    return title, "\n\n".join(parts)


def build(c):
    for key, m in MODELS.items():
        for lang in ("en", "ja"):
            title, text = _spec(lang, m)
            c.add(KB[lang], lang, "spec", key, title, text, category="spec", product="gate", model=m["name"])
            title, text = _guide(lang, key, m)
            c.add(MANUAL[lang], lang, "guide", key, title, text, category="manual", product="gate", model=m["name"])
    for proc, per in PROCEDURES.items():
        for line, (en_t, en_x, ja_t, ja_x) in per.items():
            fw = "2.x" if line == "2x" else "3.x"
            c.add(KB["en"], "en", "proc", f"{proc}-{line}", f"Kiriko Gate: {en_t}", en_x,
                  category="procedure", product="gate", firmware=fw)
            c.add(KB["ja"], "ja", "proc", f"{proc}-{line}", f"キリコゲート：{ja_t}", ja_x,
                  category="procedure", product="gate", firmware=fw)
    for sku, fits, price, en, ja in ACCESSORIES:
        price_en = f"List price: {price:,} yen excluding tax." if price else "Ask your reseller for the price."
        price_ja = f"希望小売価格：{price:,}円（税別）。" if price else "価格は販売店にお問い合わせください。"
        c.add(KB["en"], "en", "acc", sku.lower(), f"{sku} {en[0]}",
              f"{en[1]} Fits: {fits}. {price_en}",
              category="accessory", product="gate", sku=sku)
        fits_ja = fits.replace("all models on firmware 3.x", "ファームウェア3.xの全モデル").replace("all models", "全モデル").replace(", ", "、")
        c.add(KB["ja"], "ja", "acc", sku.lower(), f"{sku} {ja[0]}",
              f"{ja[1]}対応機種：{fits_ja}。{price_ja}",
              category="accessory", product="gate", sku=sku)
