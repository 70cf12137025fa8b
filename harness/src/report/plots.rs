//! The report's plots: plotters' SVG backend, drawn into strings and inlined in the HTML. Text
//! is written as SVG `<text>` elements (no font files: plotters is built without `ttf`, so
//! label sizes are estimated), rendered by the browser's own sans-serif.
//!
//! One piece at ~700 lines: every plot shares the palette, the SVG set-up, the keyed axis and
//! the legend placement, so the report's figures look alike.

use std::error::Error;
use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::analysis::{Analysis, CandStatus, SplitCompare};
use super::frontier::CostPoint;
use super::mib;
use crate::calibrate::probe::probe_ctx;
use crate::calibrate::{EngineEntry, RoutingTable};
use crate::score::FailureClass;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type PlotResult = Result<(), Box<dyn Error>>;
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;
/// A legend label, its points, their colour and marker (0 filled circle, 1 ring, 2 cross,
/// 3 triangle).
type MarkerGroup = (&'static str, Vec<(f64, f64)>, RGBColor, u8);
/// A legend label, its points, their colour, and whether the markers are filled.
type CostGroup<'a> = (&'a str, Vec<(f64, f64)>, RGBColor, bool);

const TRAIN: RGBColor = RGBColor(31, 119, 180);
const DEV: RGBColor = RGBColor(255, 127, 14);
const ACCEPTED: RGBColor = RGBColor(44, 160, 44);
const REJECTED: RGBColor = RGBColor(214, 39, 40);
const GREY: RGBColor = RGBColor(120, 120, 120);
const BASELINE: RGBColor = RGBColor(176, 176, 176);
const BEST: RGBColor = RGBColor(31, 119, 180);
const CALIBRATION: [RGBColor; 3] = [RGBColor(148, 103, 189), RGBColor(140, 86, 75), RGBColor(227, 119, 194)];

// plotters writes font sizes as given / 1.24 (16 -> 12.9 px).
const FONT: (&str, u32) = ("sans-serif", 16);
const SMALL: (&str, u32) = ("sans-serif", 15);

/// Draws `w` x `h` pixels of SVG with `draw`; a failure becomes a short note instead.
fn svg(w: u32, h: u32, draw: impl FnOnce(&Area<'_>) -> PlotResult) -> String {
    let mut out = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut out, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(Into::into).and_then(|()| draw(&root)).and_then(|()| root.present().map_err(Into::into))
    };
    match result {
        Ok(()) => out,
        Err(e) => format!("<p class=\"plot-error\">plot failed: {}</p>", super::escape(&e.to_string())),
    }
}

/// The set-up the report's linear charts share (900 x 400 px): ranges, axis descriptions
/// (x, y), `{x:.0}` ticks on x and `y_decimals` on y, and the light grid.
fn linear_chart<'a, 'b>(
    root: &'a Area<'b>,
    x: Range<f64>,
    y: Range<f64>,
    (x_desc, y_desc): (&str, &str),
    y_decimals: usize,
) -> Result<Chart<'a, 'b>, Box<dyn Error>> {
    let mut chart = ChartBuilder::on(root).margin(12).x_label_area_size(46).y_label_area_size(70).build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.y_decimals$}"))
        .label_style(FONT)
        .axis_desc_style(FONT)
        .bold_line_style(GRID)
        .light_line_style(WHITE)
        .draw()?;
    Ok(chart)
}

/// The legend every plot draws, at `position` (see [`legend_corner`]).
fn legend<'a, 'b: 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, CT>,
    position: SeriesLabelPosition,
) -> PlotResult {
    chart
        .configure_series_labels()
        .position(position)
        .label_font(SMALL)
        .background_style(WHITE.mix(0.85))
        .border_style(GREY)
        .draw()?;
    Ok(())
}

/// A linear axis whose ticks are exactly `keys` (category centres, iterations), labelled by
/// the chart's formatter.
struct Keyed {
    inner: RangedCoordf64,
    keys: Vec<f64>,
}

fn keyed(range: Range<f64>, keys: Vec<f64>) -> Keyed {
    Keyed { inner: range.into(), keys }
}

impl Ranged for Keyed {
    type ValueType = f64;
    type FormatOption = DefaultFormatting;
    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }
    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.keys.clone()
        }
    }
    fn range(&self) -> Range<f64> {
        self.inner.range()
    }
}

fn anchored(h: HPos, v: VPos) -> TextStyle<'static> {
    TextStyle::from(SMALL.into_font()).pos(Pos::new(h, v))
}

/// The corner of the plot with the fewest of `points` (x and y ranges given), for the legend.
fn legend_corner(points: &[(f64, f64)], x: &Range<f64>, y: &Range<f64>) -> SeriesLabelPosition {
    let rel = |v: f64, r: &Range<f64>| if r.end > r.start { (v - r.start) / (r.end - r.start) } else { 0.5 };
    let count = |left: bool, top: bool| {
        points
            .iter()
            .filter(|&&(px, py)| {
                let (fx, fy) = (rel(px, x), rel(py, y));
                (if left { fx < 0.45 } else { fx > 0.55 }) && (if top { fy > 0.6 } else { fy < 0.4 })
            })
            .count()
    };
    [
        (SeriesLabelPosition::UpperLeft, count(true, true)),
        (SeriesLabelPosition::UpperRight, count(false, true)),
        (SeriesLabelPosition::LowerRight, count(false, false)),
        (SeriesLabelPosition::LowerLeft, count(true, false)),
    ]
    .into_iter()
    .min_by_key(|(_, n)| *n)
    .map_or(SeriesLabelPosition::UpperLeft, |(p, _)| p)
}

/// Room above the data for a legend of `entries` lines, as a factor of the data's top (the
/// legend goes to the emptiest corner; a band left free at the top keeps it off the points).
fn headroom(entries: usize) -> f64 {
    1.08 + 0.075 * entries as f64
}

const GRID: RGBColor = RGBColor(235, 235, 235);

fn legend_line(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
}

/// Score of the current prompt over iterations on train and dev, and every scored candidate:
/// accepted, rejected on train, rejected on dev (held out; its dev score marked), dropped by
/// racing (at its mean on the part of train it ran on). Candidates rejected before any eval
/// have no score and are not plotted (the candidates table lists them).
pub fn scores(a: &Analysis) -> String {
    let n = a.iterations.len();
    let mut ys: Vec<f64> = a.baseline_train.into_iter().chain(a.baseline_dev).collect();
    for c in a.candidates().filter(|c| !matches!(c.status, CandStatus::Unscored(_))) {
        ys.push(c.train_mean);
        ys.extend(c.dev_mean);
    }
    let top = ys.iter().copied().fold(0.0, f64::max);
    let entries =
        2 + a.candidates().map(|c| std::mem::discriminant(&c.status)).collect::<std::collections::HashSet<_>>().len() + 1;
    let top = (top * headroom(entries) + 0.02).clamp(0.1, 1.05);
    svg(900, 420, |root| {
        let keys: Vec<f64> = (0..=n).map(|i| i as f64).collect();
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(46)
            .y_label_area_size(60)
            .build_cartesian_2d(keyed(-0.5..n as f64 + 0.5, keys), 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc("iteration (0 = baseline)")
            .y_desc("mean score")
            .x_label_formatter(&|x| if *x == 0.0 { "baseline".into() } else { format!("{x:.0}") })
            .y_label_formatter(&|y| format!("{y:.2}"))
            .label_style(FONT)
            .axis_desc_style(FONT)
            .bold_line_style(GRID)
            .light_line_style(WHITE)
            .draw()?;
        // The current prompt after each iteration, on train and on dev.
        let mut all: Vec<(f64, f64)> = Vec::new();
        for (name, color, base, after) in [
            ("train: current prompt", TRAIN, a.baseline_train, a.iterations.iter().map(|i| i.train_after).collect::<Vec<_>>()),
            ("dev (held out): current prompt", DEV, a.baseline_dev, a.iterations.iter().map(|i| i.dev_after).collect()),
        ] {
            let pts: Vec<(f64, f64)> =
                std::iter::once(base).chain(after).enumerate().filter_map(|(i, v)| Some((i as f64, v?))).collect();
            if pts.is_empty() {
                continue;
            }
            chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?.label(name).legend(legend_line(color));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
            all.extend(pts);
        }
        // Candidates, spread a little around their iteration.
        let x_of = |it: usize, index: usize, count: usize| it as f64 + 1.0 + (index as f64 - (count as f64 - 1.0) / 2.0) * 0.07;
        let mut groups: Vec<MarkerGroup> = vec![
            ("candidate accepted (train)", Vec::new(), ACCEPTED, 0),
            ("candidate rejected on train", Vec::new(), GREY, 1),
            ("rejected on dev: train score", Vec::new(), REJECTED, 1),
            ("rejected on dev: dev score (held out)", Vec::new(), REJECTED, 2),
            ("dropped by racing: mean on part of train", Vec::new(), GREY, 3),
        ];
        for it in &a.iterations {
            let count = it.candidates.len();
            for c in &it.candidates {
                let x = x_of(it.iteration, c.index, count);
                match c.status {
                    CandStatus::Accepted => groups[0].1.push((x, c.train_mean)),
                    CandStatus::NoTrainGain | CandStatus::NotChosen => groups[1].1.push((x, c.train_mean)),
                    CandStatus::RejectedDev => {
                        groups[2].1.push((x, c.train_mean));
                        groups[3].1.extend(c.dev_mean.map(|d| (x, d)));
                    }
                    CandStatus::Raced { .. } => groups[4].1.push((x, c.train_mean)),
                    CandStatus::Unscored(_) => {}
                }
            }
        }
        for (name, pts, color, shape) in groups {
            if pts.is_empty() {
                continue;
            }
            all.extend(&pts);
            match shape {
                0 => chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 6, color.filled())))?
                    .label(name)
                    .legend(move |(x, y)| Circle::new((x + 9, y), 5, color.filled())),
                1 => chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 5, color.stroke_width(2))))?
                    .label(name)
                    .legend(move |(x, y)| Circle::new((x + 9, y), 5, color.stroke_width(2))),
                2 => chart
                    .draw_series(pts.iter().map(|&p| Cross::new(p, 6, color.stroke_width(3))))?
                    .label(name)
                    .legend(move |(x, y)| Cross::new((x + 9, y), 5, color.stroke_width(3))),
                _ => chart
                    .draw_series(pts.iter().map(|&p| TriangleMarker::new(p, 6, color.filled())))?
                    .label(name)
                    .legend(move |(x, y)| TriangleMarker::new((x + 9, y), 5, color.filled())),
            };
        }
        legend(&mut chart, legend_corner(&all, &(-0.5..n as f64 + 0.5), &(0.0..top)))?;
        Ok(())
    })
}

/// Quality against prompt cost: every scored prompt's train mean (part of train for a raced
/// one) against the tokens its instruction adds to every example; frontier members filled, the
/// best ringed in green, the baseline grey.
pub fn prompt_cost(points: &[CostPoint]) -> String {
    let max_x = points.iter().map(|p| p.prompt_tokens).max().unwrap_or(1).max(1) as f64;
    let top = points.iter().map(|p| p.train_mean).fold(0.0, f64::max);
    let top = (top * headroom(4) + 0.02).clamp(0.1, 1.05);
    let x_range = 0.0..max_x * 1.08 + 1.0;
    svg(900, 380, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(46)
            .y_label_area_size(60)
            .build_cartesian_2d(x_range.clone(), 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc("prompt tokens (instruction and demos, added to every example)")
            .y_desc("mean train score")
            .y_label_formatter(&|y| format!("{y:.2}"))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .label_style(FONT)
            .axis_desc_style(FONT)
            .bold_line_style(GRID)
            .light_line_style(WHITE)
            .draw()?;
        let at = |p: &CostPoint| (p.prompt_tokens as f64, p.train_mean);
        let groups: [CostGroup<'_>; 3] = [
            ("baseline", points.iter().filter(|p| p.baseline).map(at).collect(), BASELINE, true),
            ("on the frontier", points.iter().filter(|p| !p.baseline && p.on_frontier).map(at).collect(), TRAIN, true),
            ("other candidates", points.iter().filter(|p| !p.baseline && !p.on_frontier).map(at).collect(), GREY, false),
        ];
        let mut all = Vec::new();
        for (name, pts, color, filled) in groups {
            if pts.is_empty() {
                continue;
            }
            all.extend(pts.iter().copied());
            let style = if filled { color.filled() } else { color.stroke_width(2) };
            chart
                .draw_series(pts.iter().map(move |&p| Circle::new(p, 5, style)))?
                .label(name)
                .legend(move |(x, y)| Circle::new((x + 9, y), 5, style));
        }
        let best: Vec<(f64, f64)> = points.iter().filter(|p| p.best).map(at).collect();
        if !best.is_empty() {
            chart
                .draw_series(best.iter().map(|&p| Circle::new(p, 9, ACCEPTED.stroke_width(2))))?
                .label("best prompt")
                .legend(|(x, y)| Circle::new((x + 9, y), 7, ACCEPTED.stroke_width(2)));
        }
        legend(&mut chart, legend_corner(&all, &x_range, &(0.0..top)))?;
        Ok(())
    })
}

/// Per-field accuracy of baseline and best on one split: horizontal bars, best above baseline.
pub fn fields(s: &SplitCompare) -> String {
    let n = s.fields.len().max(1);
    let longest = s.fields.iter().map(|f| f.name.chars().count()).max().unwrap_or(8);
    let label_w = (longest as u32 * 7 + 16).clamp(80, 300);
    let h = 110 + n as u32 * 30;
    svg(900, h, |root| {
        let centers: Vec<f64> = (0..n).map(|i| i as f64 + 0.5).collect();
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(label_w)
            .build_cartesian_2d(0.0..1.12, keyed(0.0..n as f64, centers))?;
        let names: Vec<String> = s.fields.iter().map(|f| f.name.clone()).collect();
        chart
            .configure_mesh()
            .x_desc(format!("accuracy on {} ({} examples)", s.split, s.compared))
            .y_label_formatter(&|y| names.get(n - 1 - (y.floor() as usize).min(n - 1)).cloned().unwrap_or_default())
            .x_label_formatter(&|x| format!("{x:.1}"))
            .label_style(FONT)
            .axis_desc_style(FONT)
            .disable_y_mesh()
            .bold_line_style(GRID)
            .light_line_style(WHITE)
            .draw()?;
        let row = |i: usize| (n - 1 - i) as f64;
        let bars = |best: bool| {
            s.fields.iter().enumerate().map(move |(i, f)| {
                let (v, lo, hi, color) = if best {
                    (f.best_accuracy, row(i) + 0.52, row(i) + 0.9, BEST)
                } else {
                    (f.baseline_accuracy, row(i) + 0.1, row(i) + 0.48, BASELINE)
                };
                Rectangle::new([(0.0, lo), (v.max(0.004), hi)], color.filled())
            })
        };
        chart
            .draw_series(bars(true))?
            .label("best")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], BEST.filled()));
        chart
            .draw_series(bars(false))?
            .label("baseline")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], BASELINE.filled()));
        let values = s.fields.iter().enumerate().flat_map(|(i, f)| {
            [(f.best_accuracy, row(i) + 0.71), (f.baseline_accuracy, row(i) + 0.29)]
                .map(|(v, y)| Text::new(format!("{v:.2}"), (v + 0.01, y), anchored(HPos::Left, VPos::Center)))
        });
        chart.draw_series(values)?;
        legend(
            &mut chart,
            legend_corner(
                &s.fields
                    .iter()
                    .enumerate()
                    .flat_map(|(i, f)| [(f.best_accuracy + 0.1, row(i) + 0.7), (f.baseline_accuracy + 0.1, row(i) + 0.3)])
                    .collect::<Vec<_>>(),
                &(0.0..1.12),
                &(0.0..n as f64),
            ),
        )?;
        Ok(())
    })
}

/// Categories of the failure plot: the failure classes of field verdicts, then examples the
/// engine could not run.
pub const FAILURE_CATEGORIES: [&str; 6] = ["format", "truncated", "missed", "hallucinated", "wrong", "engine error"];

fn failure_counts(f: &super::analysis::Failures) -> [usize; 6] {
    let mut out = [0; 6];
    for (i, c) in FailureClass::ALL.iter().enumerate() {
        out[i] = f.classes.get(c).copied().unwrap_or(0);
    }
    out[5] = f.errors.values().sum();
    out
}

/// Failure-class counts before (baseline) and after (best), one panel per split.
pub fn failures(splits: &[SplitCompare]) -> String {
    let shown: Vec<&SplitCompare> = splits.iter().filter(|s| s.compared > 0).collect();
    let k = shown.len().max(1);
    svg(900, 270 * k as u32, |root| {
        let panels = root.split_evenly((k, 1));
        for (panel, s) in panels.iter().zip(&shown) {
            let before = failure_counts(&s.baseline_failures);
            let after = failure_counts(&s.best_failures);
            let top = before.iter().chain(&after).copied().max().unwrap_or(0) as f64;
            let centers: Vec<f64> = (0..6).map(|i| f64::from(i) + 0.5).collect();
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("{}: {} examples", s.split, s.compared), FONT)
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(56)
                .build_cartesian_2d(keyed(0.0..6.0, centers), 0.0..(top * 1.2).max(1.0))?;
            chart
                .configure_mesh()
                .y_desc("field verdicts")
                .x_label_formatter(&|x: &f64| FAILURE_CATEGORIES.get(x.floor() as usize).copied().unwrap_or("").to_owned())
                .y_label_formatter(&|y| format!("{y:.0}"))
                .label_style(FONT)
                .axis_desc_style(SMALL)
                .disable_x_mesh()
                .bold_line_style(GRID)
                .light_line_style(WHITE)
                .draw()?;
            let bars = |counts: [usize; 6], lo: f64, hi: f64, color: RGBColor| {
                counts
                    .into_iter()
                    .enumerate()
                    .map(move |(i, c)| Rectangle::new([(i as f64 + lo, 0.0), (i as f64 + hi, c as f64)], color.filled()))
            };
            chart
                .draw_series(bars(before, 0.12, 0.5, BASELINE))?
                .label("baseline")
                .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], BASELINE.filled()));
            chart
                .draw_series(bars(after, 0.5, 0.88, BEST))?
                .label("best")
                .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], BEST.filled()));
            let labels = before
                .into_iter()
                .enumerate()
                .map(|(i, c)| (i as f64 + 0.31, c))
                .chain(after.into_iter().enumerate().map(|(i, c)| (i as f64 + 0.69, c)));
            chart.draw_series(
                labels.map(|(x, c)| Text::new(c.to_string(), (x, c as f64), anchored(HPos::Center, VPos::Bottom))),
            )?;
            legend(
                &mut chart,
                legend_corner(
                    &before
                        .iter()
                        .chain(&after)
                        .enumerate()
                        .flat_map(|(i, &c)| (0..=4).map(move |k| ((i % 6) as f64 + 0.5, c as f64 * f64::from(k) / 4.0)))
                        .collect::<Vec<_>>(),
                    &(0.0..6.0),
                    &(0.0..(top * 1.2).max(1.0)),
                ),
            )?;
        }
        Ok(())
    })
}

/// One engine run for the speed plots: input tokens, latency (ms), prefill (ms), peak (bytes).
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub input_tokens: usize,
    pub total_ms: f64,
    pub prefill_ms: f64,
    pub peak_rss_bytes: u64,
}

/// Latency against input tokens: the run's requests (total and prefill), and each calibrated
/// engine's probes and prefill fit.
pub fn latency(engine: &str, runs: &[Run], table: Option<&RoutingTable>) -> String {
    let engines: Vec<&EngineEntry> = table.map(|t| t.engines.iter().collect()).unwrap_or_default();
    let probe_pts = |e: &EngineEntry| -> Vec<(f64, f64)> {
        e.points.iter().filter(|p| p.fits).filter_map(|p| Some((p.input_tokens as f64, p.total_ms?))).collect()
    };
    let xs = runs
        .iter()
        .map(|r| r.input_tokens as f64)
        .chain(engines.iter().flat_map(|e| e.points.iter().map(|p| p.input_tokens as f64)));
    let x_max = xs.fold(1.0, f64::max) * 1.05;
    let ys = runs.iter().map(|r| r.total_ms).chain(engines.iter().flat_map(|e| probe_pts(e).into_iter().map(|p| p.1)));
    let y_max = ys.fold(1.0, f64::max) * headroom(2 + 2 * engines.len());
    svg(900, 400, |root| {
        let mut chart = linear_chart(
            root,
            0.0..x_max,
            0.0..y_max / 1000.0,
            ("input tokens (prompt after the chat template)", "latency (s)"),
            1,
        )?;
        chart
            .draw_series(runs.iter().map(|r| Circle::new((r.input_tokens as f64, r.total_ms / 1000.0), 4, TRAIN.filled())))?
            .label(format!("{engine}: this run, request total"))
            .legend(|(x, y)| Circle::new((x + 9, y), 4, TRAIN.filled()));
        chart
            .draw_series(
                runs.iter().map(|r| Circle::new((r.input_tokens as f64, r.prefill_ms / 1000.0), 3, DEV.stroke_width(2))),
            )?
            .label(format!("{engine}: this run, prefill"))
            .legend(|(x, y)| Circle::new((x + 9, y), 3, DEV.stroke_width(2)));
        let mut all: Vec<(f64, f64)> = runs
            .iter()
            .flat_map(|r| [(r.input_tokens as f64, r.total_ms / 1000.0), (r.input_tokens as f64, r.prefill_ms / 1000.0)])
            .collect();
        for (i, e) in engines.iter().enumerate() {
            let color = CALIBRATION[i % CALIBRATION.len()];
            let pts: Vec<(f64, f64)> = probe_pts(e).into_iter().map(|(x, y)| (x, y / 1000.0)).collect();
            chart
                .draw_series(pts.iter().map(|&p| TriangleMarker::new(p, 6, color.filled())))?
                .label(format!("{}: calibration probes, total", e.kind))
                .legend(move |(x, y)| TriangleMarker::new((x + 9, y), 5, color.filled()));
            let fit = &e.prefill_ms_per_token;
            let curve: Vec<(f64, f64)> = (0..=60)
                .map(|k| x_max * f64::from(k) / 60.0)
                .map(|x| (x, (x * fit.predict(x).max(0.0) / 1000.0).min(y_max / 1000.0)))
                .collect();
            all.extend(pts.iter().chain(&curve));
            chart
                .draw_series(LineSeries::new(curve, color.stroke_width(2)))?
                .label(format!("{}: calibrated prefill fit", e.kind))
                .legend(legend_line(color));
        }
        legend(&mut chart, legend_corner(&all, &(0.0..x_max), &(0.0..y_max / 1000.0)))?;
        Ok(())
    })
}

/// Peak memory against input tokens: the run's batches, and each calibrated engine's probes
/// and memory fit (at the probe's context) with the table's budget.
pub fn memory(engine: &str, runs: &[Run], table: Option<&RoutingTable>) -> String {
    let engines: Vec<&EngineEntry> = table.map(|t| t.engines.iter().collect()).unwrap_or_default();
    let xs = runs
        .iter()
        .map(|r| r.input_tokens as f64)
        .chain(engines.iter().flat_map(|e| e.points.iter().map(|p| p.input_tokens as f64)));
    let x_max = xs.fold(1.0, f64::max) * 1.05;
    let ys = runs
        .iter()
        .map(|r| r.peak_rss_bytes as f64)
        .chain(engines.iter().flat_map(|e| e.points.iter().map(|p| p.peak_rss_bytes as f64)));
    let y_max =
        memory_top(ys.fold(1.0, f64::max), table.map(|t| t.budget_bytes), 1 + 3 * engines.len() + usize::from(table.is_some()));
    svg(900, 400, |root| {
        let mut chart = linear_chart(root, 0.0..x_max, 0.0..y_max, ("input tokens", "peak RSS (MiB)"), 0)?;
        chart
            .draw_series(
                runs.iter().map(|r| Circle::new((r.input_tokens as f64, mib(r.peak_rss_bytes as f64)), 4, TRAIN.filled())),
            )?
            .label(format!("{engine}: this run (process peak while the batch ran)"))
            .legend(|(x, y)| Circle::new((x + 9, y), 4, TRAIN.filled()));
        let mut all: Vec<(f64, f64)> = runs.iter().map(|r| (r.input_tokens as f64, mib(r.peak_rss_bytes as f64))).collect();
        if let Some(t) = table {
            for (i, e) in engines.iter().enumerate() {
                let color = CALIBRATION[i % CALIBRATION.len()];
                memory_series(&mut chart, e, t, color, x_max, y_max, &mut all)?;
            }
            budget_line(&mut chart, t, x_max, &mut all)?;
        }
        legend(&mut chart, legend_corner(&all, &(0.0..x_max), &(0.0..y_max)))?;
        Ok(())
    })
}

/// A calibrated engine's probes (fits: triangles; does not fit: crosses) and its memory fit.
fn memory_series(
    chart: &mut Chart<'_, '_>,
    e: &EngineEntry,
    t: &RoutingTable,
    color: RGBColor,
    x_max: f64,
    y_max: f64,
    all: &mut Vec<(f64, f64)>,
) -> PlotResult {
    let fits: Vec<(f64, f64)> =
        e.points.iter().filter(|p| p.fits).map(|p| (p.input_tokens as f64, mib(p.peak_rss_bytes as f64))).collect();
    chart
        .draw_series(fits.iter().map(|&p| TriangleMarker::new(p, 6, color.filled())))?
        .label(format!("{}: calibration probes", e.kind))
        .legend(move |(x, y)| TriangleMarker::new((x + 9, y), 5, color.filled()));
    let over: Vec<(f64, f64)> =
        e.points.iter().filter(|p| !p.fits).map(|p| (p.input_tokens as f64, mib(p.peak_rss_bytes as f64).min(y_max))).collect();
    if !over.is_empty() {
        chart
            .draw_series(over.iter().map(|&p| Cross::new(p, 6, REJECTED.stroke_width(3))))?
            .label(format!("{}: probe over the budget (stopped)", e.kind))
            .legend(|(x, y)| Cross::new((x + 9, y), 5, REJECTED.stroke_width(3)));
    }
    let curve: Vec<(f64, f64)> = (0..=60)
        .map(|k| x_max * f64::from(k) / 60.0)
        .map(|x| (x, mib(e.predicted_peak(probe_ctx(x as usize, t.max_tokens))).clamp(0.0, y_max)))
        .collect();
    all.extend(fits.iter().chain(&over).chain(&curve));
    chart
        .draw_series(LineSeries::new(curve, color.stroke_width(2)))?
        .label(format!("{}: memory fit", e.kind))
        .legend(legend_line(color));
    if e.max_input_tokens > 0 && (e.max_input_tokens as f64) < x_max {
        let x = e.max_input_tokens as f64;
        chart
            .draw_series(DashedLineSeries::new(vec![(x, 0.0), (x, y_max)], 6, 4, color.stroke_width(1)))?
            .label(format!("{}: largest input that fits ({})", e.kind, e.max_input_tokens))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(1)));
    }
    Ok(())
}

fn budget_line(chart: &mut Chart<'_, '_>, t: &RoutingTable, x_max: f64, all: &mut Vec<(f64, f64)>) -> PlotResult {
    let b = mib(t.budget_bytes as f64);
    let y_max = chart.y_range().end;
    let line = if b <= y_max {
        all.extend((0..=10).map(|k| (x_max * f64::from(k) / 10.0, b)));
        vec![(0.0, b), (x_max, b)]
    } else {
        Vec::new()
    };
    let label = if b <= y_max { format!("memory budget {b:.0} MiB") } else { format!("memory budget {b:.0} MiB (far above)") };
    chart
        .draw_series(DashedLineSeries::new(line, 8, 4, REJECTED.stroke_width(2)))?
        .label(label)
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], REJECTED.stroke_width(2)));
    Ok(())
}

/// The top of a memory plot (MiB): the data's peak with room, raised to show the budget when
/// the budget is near enough (within twice the peak) not to flatten the data.
fn memory_top(data_max_bytes: f64, budget_bytes: Option<u64>, legend_entries: usize) -> f64 {
    let top = data_max_bytes.max(1.0) * headroom(legend_entries);
    match budget_bytes.map(|b| b as f64) {
        Some(b) if b <= 2.0 * data_max_bytes => mib(top.max(b * 1.05)),
        _ => mib(top),
    }
}

/// A routing table's engine: peak memory against input tokens, with fit, budget, threshold.
pub fn table_memory(t: &RoutingTable) -> String {
    let x_max = t.engines.iter().flat_map(|e| e.points.iter().map(|p| p.input_tokens as f64)).fold(1.0, f64::max) * 1.05;
    let y_max = memory_top(
        t.engines.iter().flat_map(|e| e.points.iter().map(|p| p.peak_rss_bytes as f64)).fold(1.0, f64::max),
        Some(t.budget_bytes),
        3 * t.engines.len() + 1,
    );
    svg(900, 400, |root| {
        let mut chart = linear_chart(
            root,
            0.0..x_max,
            0.0..y_max,
            (&format!("input tokens (context = input + {} output + 16)", t.max_tokens), "peak RSS (MiB)"),
            0,
        )?;
        let mut all = Vec::new();
        for (i, e) in t.engines.iter().enumerate() {
            memory_series(&mut chart, e, t, CALIBRATION[i % CALIBRATION.len()], x_max, y_max, &mut all)?;
        }
        budget_line(&mut chart, t, x_max, &mut all)?;
        legend(&mut chart, legend_corner(&all, &(0.0..x_max), &(0.0..y_max)))?;
        Ok(())
    })
}

/// A routing table's engines: prefill and total latency of the probes, and the prefill fit.
pub fn table_latency(t: &RoutingTable) -> String {
    let pts = |e: &EngineEntry, f: fn(&crate::calibrate::Point) -> Option<f64>| -> Vec<(f64, f64)> {
        e.points.iter().filter(|p| p.fits).filter_map(|p| Some((p.input_tokens as f64, f(p)? / 1000.0))).collect()
    };
    let x_max = t.engines.iter().flat_map(|e| e.points.iter().map(|p| p.input_tokens as f64)).fold(1.0, f64::max) * 1.05;
    let y_max = t
        .engines
        .iter()
        .flat_map(|e| pts(e, |p| p.total_ms).into_iter().chain(pts(e, |p| p.prefill_ms)).map(|p| p.1))
        .fold(0.001, f64::max)
        * headroom(3 * t.engines.len());
    svg(900, 400, |root| {
        let mut chart = linear_chart(root, 0.0..x_max, 0.0..y_max, ("input tokens", "latency (s)"), 1)?;
        let mut all = Vec::new();
        for (i, e) in t.engines.iter().enumerate() {
            let color = CALIBRATION[i % CALIBRATION.len()];
            all.extend(pts(e, |p| p.total_ms).into_iter().chain(pts(e, |p| p.prefill_ms)));
            chart
                .draw_series(pts(e, |p| p.total_ms).into_iter().map(|p| TriangleMarker::new(p, 6, color.filled())))?
                .label(format!("{}: probe total ({} output tokens)", e.kind, t.max_tokens))
                .legend(move |(x, y)| TriangleMarker::new((x + 9, y), 5, color.filled()));
            chart
                .draw_series(pts(e, |p| p.prefill_ms).into_iter().map(|p| Circle::new(p, 4, color.stroke_width(2))))?
                .label(format!("{}: probe prefill", e.kind))
                .legend(move |(x, y)| Circle::new((x + 9, y), 4, color.stroke_width(2)));
            let fit = &e.prefill_ms_per_token;
            let curve: Vec<(f64, f64)> = (0..=60)
                .map(|k| x_max * f64::from(k) / 60.0)
                .map(|x| (x, (x * fit.predict(x).max(0.0) / 1000.0).min(y_max)))
                .collect();
            all.extend(&curve);
            chart
                .draw_series(LineSeries::new(curve, color.stroke_width(2)))?
                .label(format!("{}: prefill fit", e.kind))
                .legend(legend_line(color));
        }
        legend(&mut chart, legend_corner(&all, &(0.0..x_max), &(0.0..y_max)))?;
        Ok(())
    })
}
