//! An SVG chart comparing devices: generation and prompt tokens/s, and cost per million tokens
//! where prices are known. Projected devices (`--project`) are drawn as outlined bars labelled
//! `(projected)`, next to the filled bars of measured ones; with several projected batch sizes a
//! last panel draws projected generation throughput against the batch size.

use super::{BenchReport, Test};
use plotters::coord::ranged1d::{SegmentedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordusize;
use plotters::prelude::*;

/// One bar: label, value, stdev, the index of its device (which picks its color), and whether
/// it is projected rather than measured.
type Bar = (String, f64, f64, usize, bool);

struct Panel {
    title: &'static str,
    bars: Vec<Bar>,
    unit: &'static str,
}

fn panels(report: &BenchReport) -> Vec<Panel> {
    let mut tg = Panel {
        title: "generation (tg), tokens/s",
        bars: vec![],
        unit: "",
    };
    let mut pp = Panel {
        title: "prompt processing (pp), tokens/s",
        bars: vec![],
        unit: "",
    };
    let mut cost = Panel {
        title: "$ per million generated tokens",
        bars: vec![],
        unit: "$",
    };
    let measured: Vec<_> = report
        .devices
        .iter()
        .filter(|r| r.skipped.is_none())
        .collect();
    for (d, run) in measured.iter().enumerate() {
        for r in &run.results {
            let label = format!("{} {}", run.display_name, r.test.label());
            let bar = (
                label.clone(),
                r.tokens_per_s.mean,
                r.tokens_per_s.stdev,
                d,
                false,
            );
            match r.test {
                Test::Tg(_) => {
                    tg.bars.push(bar);
                    if let Some(c) = r.usd_per_million_tokens {
                        cost.bars.push((label, c, 0.0, d, false));
                    }
                }
                Test::Pp(_) => pp.bars.push(bar),
            }
        }
    }
    for (i, p) in report
        .projection
        .iter()
        .flat_map(|p| &p.targets)
        .enumerate()
    {
        let d = measured.len() + i;
        for x in &p.prompts {
            let label = format!("{} pp{} (projected)", p.target, x.tokens);
            pp.bars.push((label, x.tokens_per_s, 0.0, d, true));
        }
        for x in p.decodes.iter().filter(|x| x.batch == 1) {
            let label = format!("{} tg{} (projected)", p.target, x.tokens);
            tg.bars
                .push((label.clone(), x.aggregate_tokens_per_s, 0.0, d, true));
            if let Some(c) = x.usd_per_million_tokens {
                cost.bars.push((label, c, 0.0, d, true));
            }
        }
    }
    [tg, pp, cost]
        .into_iter()
        .filter(|p| !p.bars.is_empty())
        .collect()
}

/// The colors of devices in every chart, in order.
pub const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn draw<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    p: &Panel,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let max = p
        .bars
        .iter()
        .map(|(_, v, s, _, _)| v + s)
        .fold(0f64, f64::max)
        .max(1e-9);
    let min = p
        .bars
        .iter()
        .map(|b| b.1)
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    // Projections of large devices can be a thousand times a CPU's measurement: a logarithmic
    // axis keeps every bar readable.
    if max / min > 100.0 {
        let floor = min / 4.0;
        let n = p.bars.len();
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{} (log scale)", p.title), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((0..n).into_segmented(), (floor..max * 4.0).log_scale())
            .map_err(e)?;
        return finish(&mut chart, p, floor, |v| v * 1.3).map_err(e);
    }
    let n = p.bars.len();
    let mut chart = ChartBuilder::on(area)
        .caption(p.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0..n).into_segmented(), 0f64..max * 1.2)
        .map_err(e)?;
    finish(&mut chart, p, 0.0, |v| v * 1.02 + max * 0.03).map_err(e)
}

/// Mesh, bars (filled when measured, outlined when projected) and value labels.
fn finish<DB: DrawingBackend, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<SegmentedCoord<RangedCoordusize>, Y>>,
    p: &Panel,
    base: f64,
    above: impl Fn(f64) -> f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let n = p.bars.len();
    let labels: Vec<String> = p.bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_desc(if p.unit == "$" { "USD" } else { "tokens/s" })
        .draw()?;
    chart.draw_series(
        p.bars
            .iter()
            .enumerate()
            .map(|(i, (_, v, _, d, projected))| {
                let color = COLORS[d % COLORS.len()];
                let style = if *projected {
                    color.stroke_width(3)
                } else {
                    color.filled()
                };
                let mut r = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), base),
                        (SegmentValue::Exact(i + 1), *v),
                    ],
                    style,
                );
                r.set_margin(0, 0, 12, 12);
                r
            }),
    )?;
    chart.draw_series(p.bars.iter().enumerate().map(|(i, (_, v, s, _, _))| {
        let text = if p.unit == "$" {
            format!("${v:.4}")
        } else if *s > 0.0 {
            format!("{v:.1} ± {s:.1}")
        } else {
            format!("{v:.1}")
        };
        Text::new(
            text,
            (SegmentValue::CenterOf(i), above(*v)),
            ("sans-serif", 14).into_font(),
        )
    }))?;
    Ok(())
}

/// One line per measured device (batched tests) and per projected target: aggregate generation
/// tokens/s at each batch size (the first generation size for projections, when more than one
/// batch size was projected).
type BatchLine = (String, Vec<(usize, f64)>);

fn batch_lines(report: &BenchReport) -> Vec<BatchLine> {
    // Measured batched tests: one line per device and prompt/generation pair.
    let mut lines: Vec<BatchLine> = Vec::new();
    for run in report.devices.iter().filter(|r| r.skipped.is_none()) {
        for b in &run.batches {
            let label = format!("{} pp{}+tg{}", run.display_name, b.test.prompt, b.test.gen);
            match lines.iter_mut().find(|l| l.0 == label) {
                Some(l) => l.1.push((b.batch, b.gen_tokens_per_s.mean)),
                None => lines.push((label, vec![(b.batch, b.gen_tokens_per_s.mean)])),
            }
        }
    }
    lines.extend(projected_batch_lines(report));
    lines
}

fn projected_batch_lines(report: &BenchReport) -> Vec<BatchLine> {
    let Some(p) = &report.projection else {
        return Vec::new();
    };
    if p.workload.batches.len() < 2 {
        return Vec::new();
    }
    let Some(&n) = p.workload.gen_sizes.first() else {
        return Vec::new();
    };
    p.targets
        .iter()
        .map(|t| {
            let points = t
                .decodes
                .iter()
                .filter(|d| d.tokens == n)
                .map(|d| (d.batch, d.aggregate_tokens_per_s))
                .collect();
            (format!("{} tg{n} (projected)", t.target), points)
        })
        .collect()
}

fn draw_batches<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    lines: &[BatchLine],
    first_color: usize,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let values = || lines.iter().flat_map(|l| l.1.iter());
    let max_b = values().map(|p| p.0).max().unwrap_or(1) as f64;
    let max_v = values().map(|p| p.1).fold(1e-9, f64::max);
    let min_v = values().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let mut chart = ChartBuilder::on(area)
        .caption(
            "generation t/s against batch (log scales)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (1f64..max_b * 1.5).log_scale(),
            (min_v / 2.0..max_v * 2.0).log_scale(),
        )
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("sequences per step")
        .y_desc("tokens/s, all sequences")
        .draw()
        .map_err(e)?;
    for (i, (label, points)) in lines.iter().enumerate() {
        let color = COLORS[(first_color + i) % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|&(b, v)| (b as f64, v)),
                color.stroke_width(2),
            ))
            .map_err(e)?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    Ok(())
}

/// The chart as SVG text.
pub fn svg(report: &BenchReport) -> Result<String, String> {
    let panels = panels(report);
    let lines = batch_lines(report);
    if panels.is_empty() && lines.is_empty() {
        return Err("nothing to plot: no device produced results".into());
    }
    let count = panels.len() + usize::from(!lines.is_empty());
    let width = 480 * count as u32;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let title = format!(
            "{} ({}), {}",
            report.model, report.model_description, report.machine
        );
        let root = root
            .titled(&title, ("sans-serif", 16))
            .map_err(|e| e.to_string())?;
        let areas = root.split_evenly((1, count));
        for (area, panel) in areas.iter().zip(&panels) {
            draw(area, panel)?;
        }
        if !lines.is_empty() {
            let measured = report
                .devices
                .iter()
                .filter(|r| r.skipped.is_none())
                .count();
            draw_batches(&areas[panels.len()], &lines, measured)?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}
