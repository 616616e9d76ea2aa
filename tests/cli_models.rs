//! `kura models …` as an administrator uses it: verify the real default models,
//! catch a corrupted file, import a GGUF from elsewhere.

mod common;

use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use common::{kura, real_models_dir, OutputText};

#[test]
fn every_default_model_verifies() {
    let out = kura(&[
        "--models-dir",
        real_models_dir().to_str().unwrap(),
        "models",
        "verify",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "verify failed:\n{}",
        out.stdout_text()
    );
    let report: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
    assert_eq!(report["ok"], true);
    // 3 chat GGUFs + the e5 container + MiniLM's 3 files.
    assert_eq!(report["files"].as_array().unwrap().len(), 7);
}

#[test]
fn one_corrupted_byte_is_caught_and_named_with_both_hashes() {
    let real = real_models_dir().join("all-minilm-l6-v2");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("all-minilm-l6-v2");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["model.safetensors", "config.json", "tokenizer.json"] {
        std::fs::copy(real.join(f), copy.join(f)).unwrap();
    }
    let models = dir.path().to_str().unwrap();
    let ok = kura(&[
        "--models-dir",
        models,
        "models",
        "verify",
        "all-minilm-l6-v2",
    ]);
    assert!(ok.status.success(), "{}", ok.stdout_text());

    // Flip one byte in the middle of the weights, keeping the size.
    let weights = copy.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&weights, &bytes).unwrap();
    let actual = kura::models::sha256_file(&weights).unwrap();

    let bad = kura(&[
        "--models-dir",
        models,
        "models",
        "verify",
        "all-minilm-l6-v2",
    ]);
    assert!(
        !bad.status.success(),
        "a corrupted model must fail verification"
    );
    let text = bad.stdout_text();
    assert!(
        text.contains(weights.to_str().unwrap()),
        "file not named:\n{text}"
    );
    assert!(
        text.contains("53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
        "expected hash missing:\n{text}"
    );
    assert!(text.contains(&actual), "actual hash missing:\n{text}");
    assert!(
        text.contains("config.json"),
        "the intact files are still reported:\n{text}"
    );
}

#[test]
fn a_missing_model_file_tells_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = kura(&[
        "--models-dir",
        dir.path().to_str().unwrap(),
        "models",
        "verify",
        "smollm2-135m-instruct",
    ]);
    assert!(!out.status.success());
    assert!(
        out.stdout_text().contains("fetch-models"),
        "{}",
        out.stdout_text()
    );
}

/// Writes a small but valid GGUF, as a company's own model would be.
fn write_gguf(path: &Path) {
    let dev = Device::Cpu;
    let w = Tensor::randn(0f32, 1.0, (64, 64), &dev).unwrap();
    let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
    let arch = gguf_file::Value::String("llama".into());
    let name = gguf_file::Value::String("Kura Seiki Model v1".into());
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(
        &mut f,
        &[("general.architecture", &arch), ("general.name", &name)],
        &[("blk.0.attn_q.weight", &q)],
    )
    .unwrap();
}

#[test]
fn an_imported_gguf_is_registered_verified_and_guarded() {
    let usb = tempfile::tempdir().unwrap();
    let src = usb.path().join("company.gguf");
    write_gguf(&src);
    let models = tempfile::tempdir().unwrap();
    let m = models.path().to_str().unwrap();

    let out = kura(&[
        "--models-dir",
        m,
        "--json",
        "models",
        "import",
        src.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        out.stdout_text(),
        out.stderr_text()
    );
    let entry: serde_json::Value = serde_json::from_str(&out.stdout_text()).unwrap();
    assert_eq!(entry["name"], "kura-seiki-model-v1");
    assert_eq!(
        entry["files"][0]["sha256"],
        kura::models::sha256_file(&src).unwrap()
    );

    let list = kura(&["--models-dir", m, "--json", "models", "list"]);
    let listed: serde_json::Value = serde_json::from_str(&list.stdout_text()).unwrap();
    let ours = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "kura-seiki-model-v1")
        .unwrap();
    assert_eq!(ours["present"], true);
    assert_eq!(ours["origin"], "imported");

    assert!(
        kura(&["--models-dir", m, "models", "verify", "kura-seiki-model-v1"])
            .status
            .success()
    );
    let copied = models.path().join("imported/kura-seiki-model-v1.gguf");
    let mut bytes = std::fs::read(&copied).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&copied, bytes).unwrap();
    let bad = kura(&["--models-dir", m, "models", "verify", "kura-seiki-model-v1"]);
    assert!(!bad.status.success());
    assert!(bad.stdout_text().contains("kura-seiki-model-v1.gguf"));

    // The same name twice is refused rather than overwritten.
    let again = kura(&["--models-dir", m, "models", "import", src.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(
        again.stderr_text().contains("already registered"),
        "{}",
        again.stderr_text()
    );
}

#[test]
fn a_truncated_gguf_is_not_imported() {
    let usb = tempfile::tempdir().unwrap();
    let src = usb.path().join("cut.gguf");
    write_gguf(&src);
    let bytes = std::fs::read(&src).unwrap();
    std::fs::write(&src, &bytes[..bytes.len() - 100]).unwrap();
    let models = tempfile::tempdir().unwrap();
    let out = kura(&[
        "--models-dir",
        models.path().to_str().unwrap(),
        "models",
        "import",
        src.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = out.stderr_text();
    assert!(
        err.contains("cut.gguf") && err.contains("truncated"),
        "{err}"
    );
    assert!(
        !models.path().join("imported.toml").exists(),
        "nothing may be registered"
    );
}
