"""Make a 2-page Japanese PDF whose font is a NON-embedded CID font with the predefined
CMap UniJIS-UCS2-H (no ToUnicode), as office tools and reportlab write it.
pdf-extract 0.12.1 panics on such fonts ("unsupported encoding"); Kura's lopdf fallback
decodes the 2-byte UCS-2 codes directly. Run: python3 predefined_cmap_pdf.py OUT.pdf"""
import sys
from reportlab.pdfgen import canvas
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont

pdfmetrics.registerFont(UnicodeCIDFont("HeiseiMin-W3"))
pdfmetrics.registerFont(UnicodeCIDFont("HeiseiKakuGo-W5"))
c = canvas.Canvas(sys.argv[1], pagesize=(595, 842))
c.setTitle("predefined cmap sample")
pages = [
    ("HeiseiKakuGo-W5", "情報セキュリティ規程", [
        "第1条 この規程は、会社の情報資産を保護するために定める。",
        "パスワードは12文字以上とし、90日ごとに変更する。",
        "Security policy: passwords must have 12 characters.",
    ]),
    ("HeiseiKakuGo-W5", "第2条 持出し", [
        "ノートパソコンを社外へ持ち出す場合は、情報システム部の許可を得ること。",
        "USBメモリの使用は原則として禁止する。",
    ]),
]
for head_font, heading, lines in pages:
    c.setFont(head_font, 16)
    c.drawString(60, 780, heading)
    y = 740
    for line in lines:
        c.setFont("HeiseiMin-W3", 11)
        c.drawString(60, y, line)
        y -= 24
    c.showPage()
c.save()
