//! An SVG chart comparing devices: generation and prompt tokens/s, and cost per million tokens
//! where prices are known.

use super::{BenchReport, Test};
use plotters::prelude::*;

/// One bar: label, value, stdev, and the index of its device (which picks its color).
type Bar = (String, f64, f64, usize);

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
    for (d, run) in report
        .devices
        .iter()
        .filter(|r| r.skipped.is_none())
        .enumerate()
    {
        for r in &run.results {
            let label = format!("{} {}", run.display_name, r.test.label());
            let bar = (label.clone(), r.tokens_per_s.mean, r.tokens_per_s.stdev, d);
            match r.test {
                Test::Tg(_) => {
                    tg.bars.push(bar);
                    if let Some(c) = r.usd_per_million_tokens {
                        cost.bars.push((label, c, 0.0, d));
                    }
                }
                Test::Pp(_) => pp.bars.push(bar),
            }
        }
    }
    [tg, pp, cost]
        .into_iter()
        .filter(|p| !p.bars.is_empty())
        .collect()
}

const COLORS: [RGBColor; 6] = [
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
        .map(|(_, v, s, _)| v + s)
        .fold(0f64, f64::max)
        .max(1e-9);
    let n = p.bars.len();
    let mut chart = ChartBuilder::on(area)
        .caption(p.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0..n).into_segmented(), 0f64..max * 1.2)
        .map_err(e)?;
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
        .draw()
        .map_err(e)?;
    chart
        .draw_series(p.bars.iter().enumerate().map(|(i, (_, v, _, d))| {
            let mut r = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), *v),
                ],
                COLORS[d % COLORS.len()].filled(),
            );
            r.set_margin(0, 0, 12, 12);
            r
        }))
        .map_err(e)?;
    chart
        .draw_series(p.bars.iter().enumerate().map(|(i, (_, v, s, _))| {
            let text = if p.unit == "$" {
                format!("${v:.4}")
            } else if *s > 0.0 {
                format!("{v:.1} ± {s:.1}")
            } else {
                format!("{v:.1}")
            };
            Text::new(
                text,
                (SegmentValue::CenterOf(i), v * 1.02 + max * 0.03),
                ("sans-serif", 14).into_font(),
            )
        }))
        .map_err(e)?;
    Ok(())
}

/// The chart as SVG text.
pub fn svg(report: &BenchReport) -> Result<String, String> {
    let panels = panels(report);
    if panels.is_empty() {
        return Err("nothing to plot: no device produced results".into());
    }
    let width = 480 * panels.len() as u32;
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
        for (area, panel) in root.split_evenly((1, panels.len())).iter().zip(&panels) {
            draw(area, panel)?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}
