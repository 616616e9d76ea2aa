#!/usr/bin/env bash
# Regenerate every sample manual in assets/manuals/ from the sources in assets/src/.
#
# Requirements (Debian 12):
#   apt-get install -y --no-install-recommends libreoffice-writer-nogui \
#       fonts-ipaexfont fonts-dejavu-core poppler-utils
#   # optional, for 品質管理手順書.pdf (upLaTeX + dvipdfmx):
#   apt-get install -y --no-install-recommends texlive-lang-japanese texlive-latex-recommended
#
# The script is idempotent: it overwrites the outputs and leaves nothing else behind.
# CI does not run it; the generated files are committed.  After regenerating, run
#   python3 assets/check_questions.py
# because page numbers in questions.jsonl depend on the PDF layout.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$HERE/src"
OUT="$HERE/manuals"
mkdir -p "$OUT"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

need() { command -v "$1" >/dev/null 2>&1 || { echo "generate.sh: '$1' not found" >&2; exit 1; }; }
need soffice
need iconv

if ! fc-list :lang=ja family | grep -q "IPAex"; then
  echo "generate.sh: IPAex fonts not installed (apt-get install fonts-ipaexfont)" >&2
  exit 1
fi

# A private LibreOffice profile, so the conversion does not depend on (or
# clash with) the user's own profile or a running LibreOffice instance.
LO_PROFILE="file://$WORK/lo-profile"

# soffice_convert <source> <target-extension:filter> <final-name>
soffice_convert() {
  local src="$1" target="$2" final="$3"
  local base
  base="$(basename "${src%.*}")"
  soffice "-env:UserInstallation=$LO_PROFILE" --headless --norestore \
    --infilter="HTML (StarWriter)" \
    --convert-to "$target" --outdir "$WORK/lo-out" "$src" >/dev/null
  local ext="${target%%:*}"
  mv -f "$WORK/lo-out/$base.$ext" "$OUT/$final"
  echo "  wrote manuals/$final"
}

echo "LibreOffice (HTML -> PDF/DOCX):"
soffice_convert "$SRC/就業規則.html"             "pdf:writer_pdf_Export"   "就業規則.pdf"
soffice_convert "$SRC/travel-expense-policy.html" "pdf:writer_pdf_Export"   "travel-expense-policy.pdf"
soffice_convert "$SRC/情報セキュリティ規程.html"   "docx:MS Word 2007 XML"  "情報セキュリティ規程.docx"

echo "Copies (HTML, Markdown):"
cp -f "$SRC/設備操作マニュアル_KR-200.html" "$OUT/設備操作マニュアル_KR-200.html"
echo "  wrote manuals/設備操作マニュアル_KR-200.html"
cp -f "$SRC/equipment-manual-KR-200.md" "$OUT/equipment-manual-KR-200.md"
echo "  wrote manuals/equipment-manual-KR-200.md"

echo "iconv (UTF-8 -> CP932/Shift_JIS, CRLF line endings):"
sed 's/$/\r/' "$SRC/経費精算FAQ.utf8.txt" | iconv -f UTF-8 -t CP932 > "$WORK/faq.txt"
mv -f "$WORK/faq.txt" "$OUT/経費精算FAQ.txt"
echo "  wrote manuals/経費精算FAQ.txt"

echo "upLaTeX + dvipdfmx:"
if command -v uplatex >/dev/null 2>&1 && command -v dvipdfmx >/dev/null 2>&1; then
  cp "$SRC/品質管理手順書.tex" "$SRC/kura-uptex-ipaex-unicode.map" "$WORK/"
  (
    cd "$WORK"
    export SOURCE_DATE_EPOCH=1705276800   # 2024-01-15, the document's revision date
    export FORCE_SOURCE_DATE=1
    for _ in 1 2; do
      uplatex -interaction=nonstopmode -halt-on-error 品質管理手順書.tex >/dev/null
    done
    # The local map sends the upTeX fonts to IPAex through the font's Unicode
    # cmap, which makes dvipdfmx write a ToUnicode CMap (text is extractable).
    dvipdfmx -q -f ./kura-uptex-ipaex-unicode.map -o 品質管理手順書.pdf 品質管理手順書.dvi
  )
  mv -f "$WORK/品質管理手順書.pdf" "$OUT/品質管理手順書.pdf"
  echo "  wrote manuals/品質管理手順書.pdf"
else
  echo "  uplatex/dvipdfmx not installed: keeping the committed 品質管理手順書.pdf" >&2
fi

echo "done."
