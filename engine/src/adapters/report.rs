//! "Did it help?": an adapter's report, made the same way whoever asks for it.
//!
//! A job's adapter is scored right after training, by whichever runner trained it
//! (`kura train run`, `kura jobs run`, `kura serve --run-jobs`, the desktop app), on
//! the job's held-out split; `kura eval adapter` scores any job or adapter on demand.
//! The report lands in the job's `report/` and travels with the published adapter
//! (`<data>/adapters/NAME/report/`), where the adapter lists and the UI's "activate"
//! button read its verdict. The scoring itself is [`crate::train::evaluate`].

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use candle_core::Device;

use super::{read_config, AdapterError, AdapterRegistry};
use crate::paths::Paths;
use crate::train::evaluate::{AdapterUnderTest, EvalProgress};
use crate::train::{
    dataset, evaluate_adapter, read_metrics, AdapterReport, EvalOptions, RunInfo, TrainRun,
};

/// What a report is about: the adapter, its base model, its held-out data and (for a
/// job) its loss log.
#[derive(Debug, Clone)]
pub struct ReportTarget {
    /// The adapter's (or job's) name.
    pub name: String,
    /// Its PEFT folder.
    pub adapter_dir: PathBuf,
    /// Its base model.
    pub info: RunInfo,
    /// The held-out examples, when known (a job's eval split).
    pub eval: Option<PathBuf>,
    /// The job's `metrics.jsonl`, for the loss curves.
    pub metrics: Option<PathBuf>,
    /// Where the report goes by default.
    pub report_dir: PathBuf,
}

impl ReportTarget {
    /// A job's finished adapter.
    pub fn of_job(run: &TrainRun) -> Result<Self, AdapterError> {
        let adapter_dir = run.adapter_dir();
        if !adapter_dir.join("adapter_config.json").is_file() {
            return Err(AdapterError::NotFinished {
                job: run.job.name.clone(),
                job_dir: run.dir.clone(),
                missing: adapter_dir.join("adapter_config.json"),
            });
        }
        Ok(Self {
            name: run.job.name.clone(),
            adapter_dir,
            info: run.info.clone(),
            eval: Some(run.dir.join("data/eval.jsonl")),
            metrics: Some(run.metrics_path()),
            report_dir: run.dir.join("report"),
        })
    }

    /// What `spec` names: a job (its name under `<data>/jobs/`, or its folder), else
    /// an adapter (a name under `<data>/adapters/`, or a PEFT folder). `model`
    /// overrides the base model.
    pub fn resolve(spec: &str, model: Option<&str>, paths: &Paths) -> Result<Self, AdapterError> {
        let as_path = Path::new(spec);
        let job_dir = [as_path.to_path_buf(), paths.jobs_dir().join(spec)]
            .into_iter()
            .find(|d| d.join("job.toml").is_file() && d.join("run.json").is_file());
        if let Some(dir) = job_dir {
            let run = TrainRun::open(&dir)?;
            let mut target = Self::of_job(&run)?;
            if let Some(m) = model {
                target.info = crate::train::resolve_model(paths, m)?;
            }
            return Ok(target);
        }
        let registry = AdapterRegistry::new(paths);
        let adapter = registry.resolve(spec).map_err(|e| match e {
            AdapterError::NotFound { .. } => AdapterError::NoJobOrAdapter {
                spec: spec.to_string(),
                jobs_dir: paths.jobs_dir(),
                adapters_dir: paths.adapters_dir(),
            },
            other => other,
        })?;
        let base = match model {
            Some(m) => m.to_string(),
            None => read_config(&adapter.dir)?
                .base_model_name_or_path
                .ok_or_else(|| AdapterError::UnknownBase(adapter.name.clone()))?,
        };
        // A published adapter remembers nothing of its job; its job folder may still exist.
        let job = paths.jobs_dir().join(&adapter.name);
        let has_job = job.join("data/eval.jsonl").is_file();
        Ok(Self {
            info: crate::train::resolve_model(paths, &base)?,
            eval: has_job.then(|| job.join("data/eval.jsonl")),
            metrics: has_job.then(|| job.join("metrics.jsonl")),
            report_dir: adapter.dir.join("report"),
            adapter_dir: adapter.dir,
            name: adapter.name,
        })
    }

    /// Scores the adapter against its base model on `examples`, with the job's loss
    /// curves when it has a log.
    pub fn evaluate(
        &self,
        examples: &[dataset::Example],
        options: &EvalOptions,
        device: &Device,
        cancel: Option<&AtomicBool>,
        progress: &mut dyn FnMut(EvalProgress),
    ) -> Result<AdapterReport, AdapterError> {
        let report = evaluate_adapter(
            AdapterUnderTest {
                name: &self.name,
                adapter_dir: &self.adapter_dir,
                base_model: &self.info.base_model,
                model_path: &self.info.model_path,
            },
            examples,
            options,
            device,
            cancel,
            progress,
        )?;
        Ok(match self.metrics.as_deref().filter(|m| m.is_file()) {
            Some(m) => report.with_curves(&read_metrics(m)?),
            None => report,
        })
    }
}

/// Scores a finished job's adapter on the job's held-out split, writes the report to
/// the job's `report/` and copies it next to the published adapter in `published`.
/// `Ok(None)`: the job has no held-out examples, so there is nothing to score.
pub fn after_training(
    job_dir: &Path,
    published: &Path,
    device: &Device,
    cancel: Option<&AtomicBool>,
    progress: &mut dyn FnMut(EvalProgress),
) -> Result<Option<AdapterReport>, AdapterError> {
    let run = TrainRun::open(job_dir)?;
    let target = ReportTarget::of_job(&run)?;
    let examples = match dataset::read_jsonl(&job_dir.join("data/eval.jsonl")) {
        Ok(e) if !e.is_empty() => e,
        _ => return Ok(None),
    };
    let options = EvalOptions {
        max_seq_len: run.job.train.max_seq_len,
        ..EvalOptions::default()
    };
    let report = target.evaluate(&examples, &options, device, cancel, progress)?;
    report.write(&target.report_dir)?;
    let copy = published.join("report");
    std::fs::create_dir_all(&copy).map_err(super::io(&copy))?;
    for f in ["report.json", "report.png"] {
        let from = target.report_dir.join(f);
        if from.is_file() {
            std::fs::copy(&from, copy.join(f)).map_err(super::io(&from))?;
        }
    }
    Ok(Some(report))
}
