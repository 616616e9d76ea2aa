"""Rewrite a QDF (uncompressed, `qpdf --qdf`) PDF made by predefined_cmap_pdf.py so that its
CID fonts use the predefined CMap 90ms-RKSJ-H (Shift_JIS codes, 1 or 2 bytes) instead of
UniJIS-UCS2-H, re-encoding every hex string in the content streams as CP932.
Run: python3 rksj.py IN.qdf.pdf OUT.qdf.pdf (then `fix-qdf` and `qpdf` to rewrite offsets)."""
import re, sys
data = open(sys.argv[1], "rb").read()
data = data.replace(b"/Encoding /UniJIS-UCS2-H", b"/Encoding /90ms-RKSJ-H")
def recode(m):
    text = bytes.fromhex(m.group(1).decode()).decode("utf-16-be")
    return b"<" + text.encode("cp932").hex().encode() + b"> Tj"
data = re.sub(rb"<([0-9a-f]+)> Tj", recode, data)
open(sys.argv[2], "wb").write(data)
