#!/bin/sh
# Regenerates the real test documents in this folder from ./sources with real tools.
# Needs (Debian): libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui
# fonts-ipaexfont poppler-utils qpdf python3 + `pip install reportlab`, and for
# debian-edu-ja-excerpt.pdf: `apt-get download debian-edu-doc-ja` (GPL-2+, see README.md).
set -eu
cd "$(dirname "$0")"
S=sources
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

# LibreOffice: 3-page Japanese manual as PDF (IPAex fonts embedded) and DOCX; XLSX; PPTX.
soffice --headless --convert-to pdf --outdir "$T" $S/manual.fodt >/dev/null 2>&1
soffice --headless --convert-to docx --outdir "$T" $S/manual.fodt >/dev/null 2>&1
soffice --headless --convert-to xlsx --outdir "$T" $S/sheets.fods >/dev/null 2>&1
soffice --headless --convert-to pptx --outdir "$T" $S/slides.fodp >/dev/null 2>&1
cp "$T/manual.pdf" manual-libreoffice.pdf
cp "$T/manual.docx" manual.docx
cp "$T/sheets.xlsx" sheets.xlsx
cp "$T/slides.pptx" slides.pptx

# reportlab: non-embedded CID fonts with predefined CMap UniJIS-UCS2-H (no ToUnicode),
# and the same document re-encoded to 90ms-RKSJ-H (Shift_JIS codes).
python3 $S/predefined_cmap_pdf.py "$T/ucs2.pdf"
qpdf --deterministic-id "$T/ucs2.pdf" predefined-unijis-ucs2.pdf
qpdf --qdf --object-streams=disable "$T/ucs2.pdf" "$T/ucs2.qdf.pdf"
python3 $S/rksj.py "$T/ucs2.qdf.pdf" "$T/rksj.qdf.pdf"
fix-qdf "$T/rksj.qdf.pdf" > "$T/rksj.fixed.pdf"
qpdf --deterministic-id "$T/rksj.fixed.pdf" predefined-90ms-rksj.pdf

# A real Japanese PDF made by others (xdvipdfmx, Identity-H + ToUnicode, embedded subsets):
# pages 1, 5 and 12 of the Debian Edu Bookworm manual (debian-edu-doc-ja, GPL-2+).
if [ -f "${EDU_PDF:-}" ]; then
  qpdf --deterministic-id --empty --pages "$EDU_PDF" 1,5,12 -- debian-edu-ja-excerpt.pdf
fi

# Text in legacy encodings.
iconv -f UTF-8 -t SHIFT_JIS $S/notice.txt > notice-sjis.txt
iconv -f UTF-8 -t EUC-JP $S/notice.txt > notice-eucjp.txt
iconv -f UTF-8 -t UTF-16 $S/notice.txt > notice-utf16le-bom.txt   # glibc writes LE + BOM
iconv -f UTF-8 -t UTF-16BE $S/notice.txt > notice-utf16be-nobom.txt
iconv -f UTF-8 -t SHIFT_JIS $S/page.html > page-sjis.html
cp $S/guide.md guide.md

# Bad inputs.
: > bad-empty.pdf
head -c 20000 manual-libreoffice.pdf > bad-truncated.pdf
qpdf --encrypt secret-user secret-owner 256 -- manual-libreoffice.pdf bad-encrypted.pdf
printf 'not really text\n' | gzip -9n | cat - /bin/true | head -c 4096 > bad-binary.txt
# A DOCX whose zip central directory is cut off and whose local data is overwritten.
head -c 3000 manual.docx > bad-corrupt.docx
