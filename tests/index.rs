//! The catalog and the two indexes on real SQLite, tantivy + IPADIC and hnsw:
//! Japanese keyword search, access control inside the index, and recovery
//! after a crash between the catalog and the indexes.

use kura::catalog::{Catalog, NewChunk, NewDocument, PageRecord};
use kura::index::{FusionParams, SearchIndex, SearchMode};
use rand::{Rng, SeedableRng};

fn unit_vector(rng: &mut rand::rngs::StdRng, dim: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn doc(path: &str) -> NewDocument {
    NewDocument {
        path: path.into(),
        content_hash: format!("hash-{path}"),
        size: 1,
        mtime: 1,
        extractor: "test".into(),
        pages: vec![PageRecord {
            number: 1,
            quality: "ok".into(),
            reason: None,
            chars: 1,
        }],
    }
}

fn chunk(text: &str, page: i64, v: Vec<f32>) -> NewChunk {
    NewChunk {
        page,
        char_start: 0,
        char_end: text.chars().count() as i64,
        heading: None,
        text: text.into(),
        tokens: 10,
        embedding: v,
    }
}

const RULES: &[&str] = &[
    "年次有給休暇を取得する場合は、原則として5営業日前までにKintaiNaviで申請しなければならない。",
    "慶弔休暇は、本人の結婚の場合5日、配偶者の出産の場合2日とする。",
    "出張で羽田空港を利用する場合は、航空券の手配を総務部に依頼する。",
    "パスワードは12文字以上とし、英大文字・英小文字・数字・記号を含めること。",
    "The spindle of the KR-200 lathe must not exceed 4,000 rpm.",
];

async fn setup(dir: &std::path::Path) -> (Catalog, SearchIndex, i64, i64) {
    let catalog = Catalog::open(&dir.join("catalog.sqlite")).await.unwrap();
    let index = SearchIndex::open(&dir.join("index")).unwrap();
    let a = catalog.collection("rules").await.unwrap().id;
    let b = catalog.collection("secret").await.unwrap().id;
    (catalog, index, a, b)
}

#[tokio::test]
async fn japanese_keywords_are_found_inside_sentences_and_compounds() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, mut index, a, _) = setup(dir.path()).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for (i, text) in RULES.iter().enumerate() {
        catalog
            .replace_document(
                a,
                &doc(&format!("rule{i}.txt")),
                &[chunk(text, 1, unit_vector(&mut rng, 16))],
            )
            .await
            .unwrap();
    }
    index.sync(&catalog).await.unwrap();
    let fusion = FusionParams::default();
    let top = |q: &str| {
        let hits = index
            .search(SearchMode::Bm25, q, None, &[a], 3, &fusion)
            .unwrap();
        hits.first()
            .map(|h| h.0)
            .unwrap_or_else(|| panic!("no hit for {q}"))
    };
    // 有給休暇 sits inside 年次有給休暇を取得する… — no whitespace to split on.
    assert!(catalog_text(&catalog, top("有給休暇の申請期限"))
        .await
        .contains("5営業日前"));
    // 羽田 is part of the IPADIC compound 羽田空港: found through the bigram field.
    assert!(catalog_text(&catalog, top("羽田"))
        .await
        .contains("羽田空港"));
    // Full-width and upper/lower-case variants of Latin text (normalised like the documents).
    let q = kura::ingest::normalize::normalize_text("ＫＲ-200 Spindle");
    assert!(catalog_text(&catalog, top(&q)).await.contains("4,000 rpm"));
    // A question about something no rule mentions matches nothing.
    assert!(index
        .search(
            SearchMode::Bm25,
            "社員食堂のメニュー",
            None,
            &[a],
            3,
            &fusion
        )
        .unwrap()
        .is_empty());
}

async fn catalog_for(dir: &std::path::Path) -> Catalog {
    Catalog::open(&dir.join("catalog.sqlite")).await.unwrap()
}

async fn catalog_text(catalog: &Catalog, id: i64) -> String {
    catalog.chunks(&[id]).await.unwrap().remove(0).text
}

#[tokio::test]
async fn a_search_never_returns_chunks_of_collections_the_caller_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, mut index, a, b) = setup(dir.path()).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let shared = unit_vector(&mut rng, 16);
    catalog
        .replace_document(
            a,
            &doc("public.txt"),
            &[chunk("社内限: 食堂は12時に開く。", 1, shared.clone())],
        )
        .await
        .unwrap();
    catalog
        .replace_document(
            b,
            &doc("secret.txt"),
            &[chunk(
                "極秘: 食堂の移転計画は12月に発表する。",
                1,
                shared.clone(),
            )],
        )
        .await
        .unwrap();
    index.sync(&catalog).await.unwrap();
    let fusion = FusionParams::default();
    for mode in [SearchMode::Bm25, SearchMode::Vector, SearchMode::Hybrid] {
        let hits = index
            .search(mode, "食堂", Some(&shared), &[a], 10, &fusion)
            .unwrap();
        let texts: Vec<String> = catalog
            .chunks(&hits.iter().map(|h| h.0).collect::<Vec<_>>())
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.text)
            .collect();
        assert_eq!(texts.len(), 1, "{mode:?}: {texts:?}");
        assert!(texts[0].starts_with("社内限"), "{mode:?} leaked {texts:?}");
    }
    let both = index
        .search(
            SearchMode::Hybrid,
            "食堂",
            Some(&shared),
            &[a, b],
            10,
            &fusion,
        )
        .unwrap();
    assert_eq!(both.len(), 2);
}

#[tokio::test]
async fn indexes_catch_up_after_a_crash_between_catalog_and_index_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let (catalog, mut index, a, _) = setup(dir.path()).await;
    catalog
        .replace_document(
            a,
            &doc("one.txt"),
            &[chunk(RULES[0], 1, unit_vector(&mut rng, 16))],
        )
        .await
        .unwrap();
    index.sync(&catalog).await.unwrap();
    // The catalog commits a second document, then the process dies before the
    // indexes commit: drop everything without syncing.
    catalog
        .replace_document(
            a,
            &doc("two.txt"),
            &[chunk(RULES[1], 1, unit_vector(&mut rng, 16))],
        )
        .await
        .unwrap();
    // …and an update of the first document that replaces its chunk.
    catalog
        .replace_document(
            a,
            &doc("one.txt"),
            &[chunk(RULES[2], 1, unit_vector(&mut rng, 16))],
        )
        .await
        .unwrap();
    drop(index);
    drop(catalog);

    let catalog = catalog_for(dir.path()).await;
    let mut index = SearchIndex::open(&dir.path().join("index")).unwrap();
    let before = index.check(&catalog).await.unwrap();
    assert!(
        !before.consistent,
        "the check must notice the lag: {before:?}"
    );
    let applied = index.sync(&catalog).await.unwrap();
    assert!(applied >= 3);
    let after = index.check(&catalog).await.unwrap();
    assert!(after.consistent, "{after:?}");
    assert_eq!(after.catalog_chunks, 2);
    let hits = index
        .search(
            SearchMode::Bm25,
            "年次有給休暇",
            None,
            &[a],
            5,
            &FusionParams::default(),
        )
        .unwrap();
    let ids: Vec<i64> = hits.iter().map(|h| h.0).collect();
    for c in catalog.chunks(&ids).await.unwrap() {
        assert!(
            !c.text.contains("年次有給休暇"),
            "the replaced chunk is still in BM25: {}",
            c.text
        );
    }
    assert!(
        !ids.contains(&1),
        "chunk 1 (the replaced one) must be gone: {ids:?}"
    );
    // Syncing again is a no-op.
    assert_eq!(index.sync(&catalog).await.unwrap(), 0);
}

#[tokio::test]
async fn removed_documents_leave_both_indexes_and_compaction_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let (catalog, mut index, a, _) = setup(dir.path()).await;
    let mut vectors = Vec::new();
    for i in 0..40 {
        let v = unit_vector(&mut rng, 16);
        vectors.push(v.clone());
        catalog
            .replace_document(
                a,
                &doc(&format!("d{i}.txt")),
                &[chunk(&format!("文書{i}の本文"), 1, v)],
            )
            .await
            .unwrap();
    }
    index.sync(&catalog).await.unwrap();
    let docs = catalog.documents(a).await.unwrap();
    for d in docs
        .iter()
        .filter(|d| (0..15).any(|i| d.path == format!("d{i}.txt")))
    {
        catalog.remove_document(d.id).await.unwrap();
    }
    index.sync(&catalog).await.unwrap(); // 15/40 tombstones > 1/4: compacted
    let report = index.check(&catalog).await.unwrap();
    assert!(report.consistent, "{report:?}");
    assert_eq!(report.vector_chunks, 25);
    // The nearest neighbour of a surviving vector is itself.
    let survivor = &vectors[20];
    let hits = index
        .search(
            SearchMode::Vector,
            "",
            Some(survivor),
            &[a],
            1,
            &FusionParams::default(),
        )
        .unwrap();
    let text = catalog.chunks(&[hits[0].0]).await.unwrap().remove(0).text;
    assert_eq!(text, "文書20の本文");
    // Reopening from disk gives the same answer.
    drop(index);
    let index = SearchIndex::open(&dir.path().join("index")).unwrap();
    let again = index
        .search(
            SearchMode::Vector,
            "",
            Some(survivor),
            &[a],
            1,
            &FusionParams::default(),
        )
        .unwrap();
    assert_eq!(again[0].0, hits[0].0);
}
