//! The files of an [`AdapterReport`]: `report.json`, and the PNG — loss curves on the
//! left, held-out answer scores of the base model and the adapter on the right.
//!
//! Drawn with plotters' bitmap backend and its pure-Rust `ab_glyph` text renderer, so
//! no fontconfig or freetype is linked: the first font found among the usual Debian
//! paths (Noto Sans CJK from `fonts-noto-cjk`, which `installer/setup` installs, then
//! IPA Gothic, then DejaVu Sans) is registered once per process. With a CJK font the
//! labels are in Japanese and English; with DejaVu only in English.

use super::evaluate::AdapterReport;
use super::TrainError;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

impl AdapterReport {
    /// Writes `report.json` and `report.png` into `dir`; returns their paths. A PNG
    /// that cannot be drawn (no usable font on the machine) is reported in the error
    /// after the JSON has been written.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf), TrainError> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let json_path = dir.join("report.json");
        let json = serde_json::to_string_pretty(self).expect("serialisable");
        super::checkpoint::write_atomic(&json_path, json.as_bytes())
            .map_err(|e| TrainError::io(&json_path, e))?;
        let png_path = dir.join("report.png");
        draw_report(self, &png_path)?;
        Ok((json_path, png_path))
    }
}

/// Fonts tried in order: (path, has Japanese glyphs).
const FONTS: [(&str, bool); 5] = [
    (
        "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
        true,
    ),
    ("/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf", true),
    ("/usr/share/fonts/truetype/fonts-japanese-gothic.ttf", true),
    ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", false),
    ("/usr/share/fonts/TTF/DejaVuSans.ttf", false),
];

/// Registers a font as `sans-serif`; `Some(has_cjk)` once one is registered.
fn font() -> Option<bool> {
    static FONT: OnceLock<Option<bool>> = OnceLock::new();
    *FONT.get_or_init(|| {
        FONTS.iter().find_map(|&(path, cjk)| {
            let bytes: &'static [u8] = Box::leak(std::fs::read(path).ok()?.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).ok()?;
            Some(cjk)
        })
    })
}

fn plot_err(e: impl std::fmt::Display) -> TrainError {
    TrainError::Plot(e.to_string())
}

/// Draws `report` into the PNG `path` (1400 × 640).
pub fn draw_report(report: &AdapterReport, path: &Path) -> Result<(), TrainError> {
    let cjk = font().ok_or_else(|| {
        TrainError::Plot(format!(
            "no font to label the plot: install fonts-noto-cjk (tried {})",
            FONTS.map(|f| f.0).join(", ")
        ))
    })?;
    let t = |ja: &str, en: &str| -> String {
        if cjk {
            format!("{ja} / {en}")
        } else {
            en.to_string()
        }
    };
    let root = BitMapBackend::new(path, (1400, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (title_area, body) = root.split_vertically(70);
    let verdict = match report.verdict {
        super::evaluate::Verdict::Better => t("改善", "the adapter beat the base"),
        super::evaluate::Verdict::Worse => t("悪化", "the adapter did NOT beat the base"),
        super::evaluate::Verdict::Mixed => t("まちまち", "mixed result"),
        super::evaluate::Verdict::NoChange => t("差なし", "no change"),
    };
    title_area
        .draw(&Text::new(
            format!(
                "{}: {} + {} — {} ({} {})",
                t("評価", "evaluation"),
                report.base_model,
                report.adapter,
                verdict,
                report.examples,
                t("問", "held-out examples")
            ),
            (20, 22),
            ("sans-serif", 24).into_font(),
        ))
        .map_err(plot_err)?;
    let (left, right) = body.split_horizontally(800);
    draw_losses(report, &left, &t)?;
    draw_scores(report, &right, &t)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

fn draw_losses(
    report: &AdapterReport,
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    t: &dyn Fn(&str, &str) -> String,
) -> Result<(), TrainError> {
    let base = report.base.loss;
    let max_step = report
        .train_curve
        .iter()
        .chain(&report.eval_curve)
        .map(|p| p.0)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let max_loss = report
        .train_curve
        .iter()
        .chain(&report.eval_curve)
        .map(|p| p.1)
        .chain(base)
        .fold(0.0f64, f64::max)
        .max(0.1)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(t("損失の推移", "loss"), ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..max_step, 0f64..max_loss)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc(t("ステップ", "step"))
        .x_label_formatter(&|x| format!("{}", x.round() as u64))
        .y_desc(t("損失", "loss"))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(plot_err)?;
    let train_color = RGBColor(66, 133, 244);
    let eval_color = RGBColor(219, 68, 55);
    if !report.train_curve.is_empty() {
        chart
            .draw_series(LineSeries::new(
                report.train_curve.iter().map(|&(s, l)| (s as f64, l)),
                train_color.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label(t("学習損失", "train loss"))
            .legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 24, y)], train_color.stroke_width(2))
            });
    }
    if !report.eval_curve.is_empty() || report.tuned.loss.is_some() {
        let mut points: Vec<(f64, f64)> = report
            .eval_curve
            .iter()
            .map(|&(s, l)| (s as f64, l))
            .collect();
        if points.is_empty() {
            points.extend(report.tuned.loss.map(|l| (max_step, l)));
        }
        chart
            .draw_series(LineSeries::new(points.clone(), eval_color.stroke_width(2)))
            .map_err(plot_err)?
            .label(t("評価損失 (アダプタ)", "eval loss, adapter"))
            .legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 24, y)], eval_color.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 5, eval_color.filled())),
            )
            .map_err(plot_err)?;
    }
    if let Some(b) = base {
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, b), (max_step, b)],
                10,
                6,
                BLACK.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label(t("評価損失 (ベース)", "eval loss, base model"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 24, y)], BLACK.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

fn draw_scores(
    report: &AdapterReport,
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    t: &dyn Fn(&str, &str) -> String,
) -> Result<(), TrainError> {
    let groups = [
        (
            t("完全一致", "exact match"),
            report.base.exact_match,
            report.tuned.exact_match,
        ),
        (
            t("文字F1", "char F1"),
            report.base.char_f1,
            report.tuned.char_f1,
        ),
        (
            t("正解を含む", "contains answer"),
            report.base.contains_reference,
            report.tuned.contains_reference,
        ),
    ];
    let mut chart = ChartBuilder::on(area)
        .caption(
            t("評価データの回答", "held-out answers"),
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(20)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..3f64, 0f64..1.2f64)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(plot_err)?;
    let base_color = RGBColor(150, 150, 150);
    let tuned_color = RGBColor(66, 133, 244);
    for (i, (name, b, a)) in groups.iter().enumerate() {
        let x = i as f64;
        for (x0, x1, v, color) in [
            (x + 0.12, x + 0.47, *b, base_color),
            (x + 0.53, x + 0.88, *a, tuned_color),
        ] {
            chart
                .draw_series([Rectangle::new([(x0, 0.0), (x1, v)], color.filled())])
                .map_err(plot_err)?;
            chart
                .draw_series([Text::new(
                    format!("{v:.2}"),
                    (x0 + 0.06, v + 0.05),
                    ("sans-serif", 16).into_font(),
                )])
                .map_err(plot_err)?;
        }
        chart
            .draw_series([Text::new(
                name.clone(),
                (x + 0.08, 1.15),
                ("sans-serif", 15).into_font(),
            )])
            .map_err(plot_err)?;
    }
    chart
        .draw_series([Rectangle::new(
            [(0.1, 1.02), (0.2, 1.06)],
            base_color.filled(),
        )])
        .map_err(plot_err)?;
    chart
        .draw_series([Text::new(
            t("ベース", "base"),
            (0.22, 1.07),
            ("sans-serif", 14).into_font(),
        )])
        .map_err(plot_err)?;
    chart
        .draw_series([Rectangle::new(
            [(1.1, 1.02), (1.2, 1.06)],
            tuned_color.filled(),
        )])
        .map_err(plot_err)?;
    chart
        .draw_series([Text::new(
            t("アダプタ", "adapter"),
            (1.22, 1.07),
            ("sans-serif", 14).into_font(),
        )])
        .map_err(plot_err)?;
    Ok(())
}
