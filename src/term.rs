//! Terminal helpers shared by the commands: JSON output, progress bars, Ctrl-C,
//! local times of day, and the printouts that more than one command shows (a
//! checked answer for `ask` and `chat --rag`; training steps and adapter reports
//! for `train`, `jobs` and `eval adapter`).
//!
//! They live here rather than in one command's module so that no command module
//! has to use another; this module uses none of them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use indicatif::{ProgressBar, ProgressStyle};

use kura::jobs::next_local_time;
use kura::rag::{Answer, Lang, RefusalReason};
use kura::train::evaluate::EvalProgress;
use kura::train::{AdapterReport, StepReport};

/// Prints one JSON document (what `--json` asks for), pretty-printed.
pub(crate) fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values always serialise")
    );
}

/// A progress bar for `what`, with rate and ETA.
pub(crate) fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} {{per_sec}} ETA {{eta}} {{msg}}"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// Ctrl-C cancels the generation in flight instead of killing the process.
pub(crate) fn cancel_on_ctrl_c() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(async {
                loop {
                    if tokio::signal::ctrl_c().await.is_err() {
                        break;
                    }
                    f.store(true, Ordering::SeqCst);
                }
            });
        }
    });
    flag
}

/// Reads `--at HH:MM` as the next such local time (seconds since the epoch).
pub(crate) fn parse_at(at: &Option<String>) -> Result<Option<i64>> {
    at.as_deref()
        .map(|a| {
            next_local_time(a).ok_or_else(|| {
                anyhow!("--at {a}: expected a local time of day as HH:MM (e.g. 22:00)")
            })
        })
        .transpose()
}

/// A timestamp as a local date and time, `YYYY-MM-DD HH:MM`.
pub(crate) fn local(ts: i64) -> String {
    jiff::Timestamp::from_second(ts)
        .map(|t| {
            t.to_zoned(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|_| ts.to_string())
}

/// Prints the checked answer's aftermath: flags, citations or closest sources.
pub(crate) fn print_outcome(a: &Answer, streamed: bool) {
    let lang = a.lang;
    if streamed {
        println!();
    }
    if a.refused {
        if streamed {
            let why = match (a.refusal_reason, lang) {
                (Some(RefusalReason::Unsupported), Lang::Ja) => {
                    "(回答が資料で裏付けられなかったため)"
                }
                (Some(RefusalReason::Unsupported), Lang::En) => {
                    "(the answer was not backed by the documents)"
                }
                _ => "",
            };
            println!("\n→ {} {why}", a.answer);
        } else {
            println!("{}", a.answer);
        }
        if !a.sources.is_empty() {
            println!("\n{}:", lang.closest_heading());
            for s in a.sources.iter().take(3) {
                let snippet: String = s
                    .text
                    .chars()
                    .take(100)
                    .collect::<String>()
                    .replace('\n', " ");
                println!("  {} p.{}  {}", s.doc, s.page, snippet);
            }
        }
        return;
    }
    if a.answer != a.model_answer.trim() {
        let label = if lang == Lang::Ja {
            "確認済みの回答"
        } else {
            "Checked answer"
        };
        println!("\n{label}: {}", a.answer);
    }
    if !a.removed_citations.is_empty() {
        let list = a
            .removed_citations
            .iter()
            .map(|n| format!("[{n}]"))
            .collect::<Vec<_>>()
            .join(" ");
        match lang {
            Lang::Ja => println!(
                "※ 存在しない出典番号 {list} を削除しました(出典は{}件)",
                a.sources.len()
            ),
            Lang::En => println!(
                "※ removed citation(s) {list}: only {} sources were given",
                a.sources.len()
            ),
        }
    }
    for u in &a.unsupported {
        match lang {
            Lang::Ja => println!("⚠ 資料で裏付けられない文: {u}"),
            Lang::En => println!("⚠ not backed by the cited source: {u}"),
        }
    }
    println!("\n{}:", lang.sources_heading());
    for c in &a.citations {
        let mark = match (c.supported, c.inferred) {
            (false, _) => " ⚠",
            (true, true) => " (inferred)",
            _ => "",
        };
        println!(
            "  [{}] {} p.{} (chunk {}){mark}\n      「{}」",
            c.n, c.doc, c.page, c.chunk_id, c.quote
        );
    }
}

/// One training step as a line: step, loss, learning rate, speed, ETA.
pub(crate) fn progress_line(r: &StepReport) -> String {
    let mut line = format!(
        "step {:>5}/{:<5} loss {:.4}  lr {:.2e}  {:>7.1} tok/s  ETA {}",
        r.step,
        r.total_steps,
        r.loss,
        r.lr,
        r.tokens_per_s,
        duration(r.eta_s)
    );
    if let Some(e) = r.eval_loss {
        line.push_str(&format!("  eval {e:.4}"));
    }
    if r.checkpoint.is_some() {
        line.push_str("  [checkpoint]");
    }
    line
}

/// Seconds as `1h05m` or `3m07s`.
pub(crate) fn duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// Prints where scoring an adapter is.
pub(crate) fn eval_progress(
    name: &str,
    base_model: &str,
    examples: usize,
    p: EvalProgress,
    json_out: bool,
) {
    if json_out {
        return;
    }
    match p {
        EvalProgress::Loss => eprintln!(
            "scoring `{name}` against {base_model} on {examples} held-out examples: loss…"
        ),
        EvalProgress::Answer { done, total } => {
            eprint!("\ranswers {}/{total}", done + 1);
            if done + 1 == total {
                eprintln!();
            }
        }
    }
}

/// Prints a report: its scores as a table (or JSON), and where it was written.
pub(crate) fn print_report(
    report: &AdapterReport,
    written: Option<&(PathBuf, PathBuf)>,
    json_out: bool,
) {
    if json_out {
        print_json(&serde_json::to_value(report).expect("serialisable"));
        return;
    }
    let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.3}"));
    println!("{:<22} {:>10} {:>10}", "", "base", "adapter");
    println!(
        "{:<22} {:>10} {:>10}",
        "eval loss",
        f(report.base.loss),
        f(report.tuned.loss)
    );
    println!(
        "{:<22} {:>10} {:>10}",
        "perplexity",
        f(report.base.perplexity),
        f(report.tuned.perplexity)
    );
    for (label, b, t) in [
        (
            "exact match",
            report.base.exact_match,
            report.tuned.exact_match,
        ),
        ("character F1", report.base.char_f1, report.tuned.char_f1),
        (
            "contains reference",
            report.base.contains_reference,
            report.tuned.contains_reference,
        ),
    ] {
        println!("{label:<22} {b:>10.3} {t:>10.3}");
    }
    println!("{}", report.summary);
    if let Some((json, png)) = written {
        println!("report: {} , {}", json.display(), png.display());
    }
}
