//! Extraction of real documents made with real tools (see tests/data/ingest/generate.sh)
//! and of a corpus of bad inputs.

use std::io::Write;
use std::path::{Path, PathBuf};

use kura::ingest::{
    extract, extract_format, ExtractError, ExtractedDocument, Format, Limits, PageQuality,
};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/ingest")
        .join(name)
}

fn ok(name: &str) -> ExtractedDocument {
    let path = data(name);
    let doc = extract(&path, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    for page in &doc.pages {
        assert_eq!(
            page.quality,
            PageQuality::Ok,
            "{name} p.{}: {:?}\n{}",
            page.number,
            page.quality,
            page.text
        );
    }
    doc
}

fn page(doc: &ExtractedDocument, number: u32) -> &str {
    &doc.pages
        .iter()
        .find(|p| p.number == number)
        .unwrap_or_else(|| panic!("no page {number}"))
        .text
}

fn assert_has(text: &str, words: &[&str]) {
    for w in words {
        assert!(text.contains(w), "missing {w:?} in:\n{text}");
    }
}

#[test]
fn libreoffice_pdf_keeps_pages() {
    let doc = ok("manual-libreoffice.pdf");
    assert_eq!(doc.pages.len(), 3);
    assert_eq!(
        doc.pages.iter().map(|p| p.number).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_has(
        page(&doc, 1),
        &["総則", "株式会社蔵", "始業時刻は午前", "Kura working hours"],
    );
    assert_has(page(&doc, 2), &["休暇", "年次有給休暇", "人事部"]);
    assert_has(
        page(&doc, 3),
        &["経費精算", "出張旅費", "領収書", "カタカナ半角表記"],
    );
    assert!(!page(&doc, 1).contains("年次有給休暇"));
    assert!(
        !page(&doc, 3).contains("ｶﾀｶﾅ"),
        "NFKC folds half-width kana"
    );
}

#[test]
fn predefined_unijis_ucs2_pdf_uses_fallback() {
    let doc = ok("predefined-unijis-ucs2.pdf");
    assert_eq!(doc.extractor, "pdf-lopdf", "{:?}", doc.warnings);
    assert_eq!(doc.pages.len(), 2);
    assert_has(
        page(&doc, 1),
        &[
            "情報セキュリティ規程",
            "第1条",
            "パスワードは12文字以上",
            "Security policy: passwords",
        ],
    );
    assert_has(
        page(&doc, 2),
        &[
            "持出し",
            "ノートパソコン",
            "USBメモリの使用は原則として禁止する。",
        ],
    );
    assert!(
        page(&doc, 1).lines().any(|l| l == "情報セキュリティ規程"),
        "heading is its own line"
    );
}

#[test]
fn predefined_90ms_rksj_pdf_uses_fallback() {
    let doc = ok("predefined-90ms-rksj.pdf");
    assert_eq!(doc.extractor, "pdf-lopdf");
    assert_has(
        page(&doc, 1),
        &["情報セキュリティ規程", "90日ごとに変更する"],
    );
    assert_has(page(&doc, 2), &["情報システム部の許可"]);
}

#[test]
fn debian_edu_excerpt_pdf() {
    // Three pages of a real 101-page manual made by xdvipdfmx (debian-edu-doc-ja, GPL-2+).
    let doc = ok("debian-edu-ja-excerpt.pdf");
    assert_eq!(doc.pages.len(), 3);
    assert_has(page(&doc, 1), &["Debian Edu", "マニュアル"]);
    assert_has(
        page(&doc, 3),
        &["ファイルシステムのアクセス設定", "ホームディレクトリ"],
    );
}

#[test]
fn pdf_renamed_bin_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let renamed = dir.path().join("report.bin");
    std::fs::copy(data("manual-libreoffice.pdf"), &renamed).unwrap();
    let doc = extract(&renamed, &Limits::default()).unwrap();
    assert_eq!(doc.pages.len(), 3);
    assert!(page(&doc, 2).contains("年次有給休暇"));
}

#[test]
fn docx_splits_at_explicit_page_breaks() {
    let doc = ok("manual.docx");
    assert_eq!(doc.extractor, "docx");
    assert_eq!(doc.pages.len(), 3);
    assert_has(
        page(&doc, 1),
        &["第1章 総則", "始業時刻は午前9時、終業時刻は午後6時とする。"],
    );
    assert_has(
        page(&doc, 2),
        &["第2章 休暇", "入社6か月後に10日を付与する。"],
    );
    assert_has(page(&doc, 3), &["出張旅費", "カタカナ半角表記"]);
}

#[test]
fn xlsx_sheet_per_page_rows_tab_separated() {
    let doc = ok("sheets.xlsx");
    assert_eq!(doc.pages.len(), 2);
    let first = page(&doc, 1);
    assert_eq!(first.lines().next(), Some("連絡先"));
    assert_has(
        first,
        &[
            "部署\t担当者\t内線",
            "人事部\t山田太郎\t1234",
            "情報システム部\t佐藤花子\t5678",
        ],
    );
    let second = page(&doc, 2);
    assert_eq!(second.lines().next(), Some("経費"));
    assert_has(second, &["宿泊費\t12000", "日当\t2500.5\t宿泊費"]);
}

#[test]
fn pptx_slide_per_page_in_order() {
    let doc = ok("slides.pptx");
    assert_eq!(doc.pages.len(), 3);
    assert_has(
        page(&doc, 1),
        &["新入社員研修", "研修期間は4月1日から2週間"],
    );
    assert_has(page(&doc, 2), &["勤怠管理", "打刻はICカードで行う"]);
    assert_has(page(&doc, 3), &["問い合わせ先", "人事部 内線1234"]);
}

#[test]
fn html_shift_jis_visible_text_only() {
    let doc = ok("page-sjis.html");
    assert_eq!(doc.pages.len(), 1);
    let text = page(&doc, 1);
    assert_has(
        text,
        &[
            "社内ポータル 案内",
            "経費精算は毎月25日までに申請してください。<重要>",
            "部署\t内線",
            "総務部\t1100",
            "詳細は規程を参照。",
        ],
    );
    assert!(text.lines().any(|l| l == "交通費"));
    for hidden in ["スクリプト", "スタイル", "コメント", "font-family"] {
        assert!(!text.contains(hidden), "{hidden} leaked:\n{text}");
    }
}

#[test]
fn text_encodings_are_detected() {
    for (name, extractor) in [
        ("notice-sjis.txt", "text/shift_jis"),
        ("notice-eucjp.txt", "text/euc-jp"),
        ("notice-utf16le-bom.txt", "text/utf-16le"),
        ("notice-utf16be-nobom.txt", "text/utf-16be"),
    ] {
        let doc = ok(name);
        assert_eq!(doc.extractor, extractor, "{name}");
        assert_has(
            page(&doc, 1),
            &[
                "お知らせ:年末年始の休業について",
                "12月29日から1月3日まで休業いたします。",
                "総務部(内線 1100)",
                "半角カナ:コンピュータ",
            ],
        );
    }
}

#[test]
fn markdown_keeps_headings_and_lists_as_lines() {
    let doc = ok("guide.md");
    let text = page(&doc, 1);
    let lines: Vec<&str> = text.lines().collect();
    for want in [
        "在宅勤務ガイド",
        "注意事項",
        "- 業務用PCのみを使用する",
        "1. VPNに接続する",
        "2. kura-client を起動する",
        "不明点は情報システム部へ。",
    ] {
        assert!(lines.contains(&want), "missing line {want:?} in:\n{text}");
    }
    assert_has(
        text,
        &[
            "前日までに申請フォームから申請する。",
            "設定ファイルは ~/.kura/config に置く",
        ],
    );
    assert!(!text.contains("https://") && !text.contains("**") && !text.contains("```"));
}

fn expect_err(path: &Path) -> ExtractError {
    let err = extract(path, &Limits::default()).expect_err("should fail");
    assert_eq!(err.path(), path);
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    err
}

#[test]
fn empty_file_is_empty_error() {
    assert!(matches!(
        expect_err(&data("bad-empty.pdf")),
        ExtractError::Empty { .. }
    ));
}

#[test]
fn truncated_pdf_is_corrupt() {
    let err = expect_err(&data("bad-truncated.pdf"));
    assert!(matches!(err, ExtractError::Corrupt { .. }), "{err}");
}

#[test]
fn encrypted_pdf_is_encrypted_error() {
    let err = expect_err(&data("bad-encrypted.pdf"));
    assert!(matches!(err, ExtractError::Encrypted { .. }), "{err}");
    assert!(err.to_string().contains("パスワード"));
}

#[test]
fn binary_renamed_txt_is_binary_error() {
    let err = expect_err(&data("bad-binary.txt"));
    assert!(matches!(err, ExtractError::Binary { .. }), "{err}");
    // The same without any magic number: random bytes named .txt.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("random.txt");
    let bytes: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(&path, bytes).unwrap();
    assert!(matches!(expect_err(&path), ExtractError::Binary { .. }));
}

#[test]
fn corrupt_docx_is_corrupt() {
    let err = expect_err(&data("bad-corrupt.docx"));
    assert!(matches!(err, ExtractError::Corrupt { .. }), "{err}");
}

/// A DOCX whose document.xml claims 2 GiB: stored with a forged size in the headers, or a
/// real highly compressible entry. Both must be refused before inflating.
#[test]
fn zip_bomb_docx_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Real deflate bomb: 64 MiB of zeros compress to ~64 KiB (ratio ~1000).
    let path = dir.path().join("bomb.docx");
    {
        let file = std::fs::File::create(&path).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("[Content_Types].xml", opts).unwrap();
        zip.write_all(b"<Types/>").unwrap();
        zip.start_file("word/document.xml", opts).unwrap();
        let zeros = vec![b' '; 1 << 20];
        for _ in 0..64 {
            zip.write_all(&zeros).unwrap();
        }
        zip.finish().unwrap();
    }
    assert!(std::fs::metadata(&path).unwrap().len() < 200_000);
    let err = expect_err(&path);
    assert!(matches!(err, ExtractError::ZipBomb { .. }), "{err}");

    // Forged header: a tiny entry whose central directory claims 2 GiB.
    let forged = dir.path().join("forged.docx");
    let mut bytes = std::fs::read(data("manual.docx")).unwrap();
    forge_sizes(&mut bytes, "word/document.xml", 2 << 30);
    std::fs::write(&forged, &bytes).unwrap();
    let err = expect_err(&forged);
    assert!(matches!(err, ExtractError::ZipBomb { .. }), "{err}");

    // Many entries.
    let many = dir.path().join("many.xlsx");
    {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&many).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        zip.start_file("xl/workbook.xml", opts).unwrap();
        for i in 0..30 {
            zip.start_file(format!("x/{i}"), opts).unwrap();
        }
        zip.finish().unwrap();
    }
    let limits = Limits {
        max_zip_entries: 10,
        ..Limits::default()
    };
    let err = extract(&many, &limits).unwrap_err();
    assert!(matches!(err, ExtractError::ZipBomb { .. }), "{err}");
}

/// Overwrites the uncompressed-size fields of `name` in the local header and the central
/// directory.
fn forge_sizes(bytes: &mut [u8], name: &str, size: u32) {
    let name = name.as_bytes();
    let mut i = 0;
    while i + 46 < bytes.len() {
        let sig = &bytes[i..i + 4];
        if sig == b"PK\x03\x04" {
            let n = u16::from_le_bytes([bytes[i + 26], bytes[i + 27]]) as usize;
            if &bytes[i + 30..i + 30 + n] == name {
                bytes[i + 22..i + 26].copy_from_slice(&size.to_le_bytes());
            }
        } else if sig == b"PK\x01\x02" {
            let n = u16::from_le_bytes([bytes[i + 28], bytes[i + 29]]) as usize;
            if &bytes[i + 46..i + 46 + n] == name {
                bytes[i + 24..i + 28].copy_from_slice(&size.to_le_bytes());
            }
        }
        i += 1;
    }
}

#[test]
fn file_too_large_is_refused() {
    let limits = Limits {
        max_file_bytes: 1000,
        ..Limits::default()
    };
    let err = extract(&data("manual-libreoffice.pdf"), &limits).unwrap_err();
    assert!(matches!(err, ExtractError::TooLarge { .. }), "{err}");
}

#[test]
fn missing_file_is_io_error() {
    let err = extract(&data("no-such-file.pdf"), &Limits::default()).unwrap_err();
    assert!(matches!(err, ExtractError::Io { .. }), "{err}");
}

/// Deterministic xorshift for the robustness test (no extra dependency, reproducible).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// 200 random or mutated inputs per extractor: each returns Ok or Err, never panics out of
/// `extract_format` (the same function the fuzz targets call).
#[test]
fn random_and_mutated_inputs_never_escape() {
    let seeds: [(Format, &str); 7] = [
        (Format::Pdf, "predefined-unijis-ucs2.pdf"),
        (Format::Docx, "manual.docx"),
        (Format::Xlsx, "sheets.xlsx"),
        (Format::Pptx, "slides.pptx"),
        (Format::Html, "page-sjis.html"),
        (Format::Markdown, "guide.md"),
        (Format::Text, "notice-sjis.txt"),
    ];
    let limits = Limits {
        timeout: std::time::Duration::from_secs(20),
        ..Limits::default()
    };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for (format, seed) in seeds {
        let original = std::fs::read(data(seed)).unwrap();
        let (mut ok, mut err) = (0, 0);
        for round in 0..200 {
            let input: Vec<u8> = if round % 4 == 0 {
                (0..rng.below(4096)).map(|_| rng.next() as u8).collect()
            } else {
                let mut m = original.clone();
                for _ in 0..1 + rng.below(16) {
                    match rng.below(3) {
                        0 if !m.is_empty() => {
                            let i = rng.below(m.len());
                            m[i] = rng.next() as u8;
                        }
                        1 if !m.is_empty() => m.truncate(rng.below(m.len())),
                        _ => {
                            let i = rng.below(m.len() + 1);
                            m.insert(i, rng.next() as u8);
                        }
                    }
                }
                m
            };
            match extract_format(format, &input, &limits) {
                Ok(_) => ok += 1,
                Err(e @ (ExtractError::TimedOut { .. } | ExtractError::Panicked { .. })) => {
                    panic!("{format:?} round {round}: {e}")
                }
                Err(_) => err += 1,
            }
        }
        eprintln!("{format:?}: {ok} ok, {err} errors");
        assert_eq!(ok + err, 200);
    }
}
