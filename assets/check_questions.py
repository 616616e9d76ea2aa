#!/usr/bin/env python3
"""Verify assets/questions.jsonl against the documents in assets/manuals/.

For every answerable question the gold `answer` must occur in the text of
`doc` on `page`:

* PDF   -> text of that page from `pdftotext -f N -l N -enc UTF-8`
* DOCX  -> all text of word/document.xml (page must be 1)
* HTML  -> the file with tags removed and entities unescaped (page must be 1)
* MD    -> the UTF-8 file as is (page must be 1)
* TXT   -> the file decoded as CP932 / Shift_JIS (page must be 1)

Both sides are compared after Unicode NFKC normalisation with all whitespace
removed, because pdftotext inserts spaces between Japanese and Latin/digits
("第 3 条") and breaks lines in the middle of sentences.

Unanswerable questions must have doc/page/answer = null; their optional
`absent_terms` must occur in no document at all.

Also checks that the Shift_JIS FAQ really is CP932 (not UTF-8), that the IDs
are unique and that the language mix is as documented.

Usage: python3 assets/check_questions.py   (exit status 0 = all good)
Needs: python3 (stdlib only) and pdftotext (poppler-utils).
"""
import html
import json
import re
import subprocess
import sys
import unicodedata
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANUALS = HERE / "manuals"
QUESTIONS = HERE / "questions.jsonl"


def norm(s: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", s))


def pdf_pages(path: Path) -> int:
    out = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    m = re.search(r"^Pages:\s+(\d+)", out, re.M)
    if not m:
        raise RuntimeError(f"cannot read page count of {path}")
    return int(m.group(1))


def pdf_page_text(path: Path, page: int) -> str:
    return subprocess.run(
        ["pdftotext", "-enc", "UTF-8", "-f", str(page), "-l", str(page), str(path), "-"],
        capture_output=True, text=True, check=True,
    ).stdout


def whole_text(path: Path) -> str:
    """Text of a non-PDF document, or of all pages of a PDF."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        return "\n".join(pdf_page_text(path, p) for p in range(1, pdf_pages(path) + 1))
    if suffix == ".docx":
        with zipfile.ZipFile(path) as z:
            xml = z.read("word/document.xml").decode("utf-8")
        xml = re.sub(r"</w:p>", "\n", xml)
        return html.unescape(re.sub(r"<[^>]+>", "", xml))
    if suffix in (".html", ".htm"):
        raw = path.read_text(encoding="utf-8")
        raw = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", raw)
        return html.unescape(re.sub(r"<[^>]+>", " ", raw))
    if suffix == ".txt":
        return path.read_bytes().decode("cp932")
    return path.read_text(encoding="utf-8")


def main() -> int:
    errors = []
    docs = sorted(p for p in MANUALS.iterdir() if p.is_file())
    doc_names = {p.name for p in docs}
    all_text = {p.name: norm(whole_text(p)) for p in docs}

    # The FAQ must really be Shift_JIS/CP932, not UTF-8.
    faq = MANUALS / "経費精算FAQ.txt"
    if faq.exists():
        raw = faq.read_bytes()
        try:
            raw.decode("utf-8")
            errors.append("経費精算FAQ.txt decodes as UTF-8; it must be CP932")
        except UnicodeDecodeError:
            pass

    seen = set()
    counts = {"ja": 0, "en": 0, "unanswerable": 0}
    lines = QUESTIONS.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            q = json.loads(line)
        except json.JSONDecodeError as e:
            errors.append(f"line {n}: invalid JSON: {e}")
            continue
        qid = q.get("id")
        where = f"line {n} ({qid})"
        for key in ("id", "lang", "question", "answer", "doc", "page", "answerable"):
            if key not in q:
                errors.append(f"{where}: missing key {key!r}")
        if qid in seen:
            errors.append(f"{where}: duplicate id")
        seen.add(qid)
        if q.get("lang") not in ("ja", "en"):
            errors.append(f"{where}: lang must be 'ja' or 'en'")

        if not q.get("answerable"):
            counts["unanswerable"] += 1
            if any(q.get(k) is not None for k in ("answer", "doc", "page")):
                errors.append(f"{where}: unanswerable question must have answer/doc/page = null")
            for term in q.get("absent_terms", []):
                hits = [d for d, t in all_text.items() if norm(term) in t]
                if hits:
                    errors.append(f"{where}: term {term!r} of an unanswerable question occurs in {hits}")
            continue

        counts[q.get("lang", "ja")] = counts.get(q.get("lang", "ja"), 0) + 1
        doc, page, answer = q.get("doc"), q.get("page"), q.get("answer")
        if doc not in doc_names:
            errors.append(f"{where}: unknown doc {doc!r}")
            continue
        if not isinstance(answer, str) or not answer.strip():
            errors.append(f"{where}: answer must be a non-empty string")
            continue
        path = MANUALS / doc
        if path.suffix.lower() == ".pdf":
            pages = pdf_pages(path)
            if not isinstance(page, int) or not 1 <= page <= pages:
                errors.append(f"{where}: page {page!r} out of range 1..{pages}")
                continue
            text = norm(pdf_page_text(path, page))
        else:
            if page != 1:
                errors.append(f"{where}: non-PDF documents use page 1, got {page!r}")
                continue
            text = all_text[doc]
        if norm(answer) not in text:
            found = ""
            if path.suffix.lower() == ".pdf":
                others = [p for p in range(1, pdf_pages(path) + 1)
                          if norm(answer) in norm(pdf_page_text(path, p))]
                found = f" (found on pages {others})" if others else " (not found on any page)"
            errors.append(f"{where}: answer {answer!r} not on {doc} page {page}{found}")

    print(f"checked {len(seen)} questions: {counts['ja']} ja, {counts['en']} en, "
          f"{counts['unanswerable']} unanswerable; {len(docs)} documents")
    for e in errors:
        print("FAIL:", e)
    if errors:
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
