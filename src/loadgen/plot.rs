//! The throughput-against-interactivity chart: total output tokens/s a server sustains (y)
//! against the tokens/s each user sees (x), one line per server through its load points, each
//! point labelled with its load and cost per million output tokens, and the TPOT objective as a
//! vertical boundary (points left of it are too slow per user).

use super::report::ServeReport;
use plotters::prelude::*;
use switchyard::bench::COLORS;

pub fn svg(report: &ServeReport) -> Result<String, String> {
    let points: Vec<(f64, f64)> = report
        .servers
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| p.completed > 0)
        .map(|p| (p.per_user_tokens_per_s, p.output_tokens_per_s))
        .collect();
    if points.is_empty() {
        return Err("no completed requests to plot".into());
    }
    let boundary = report.slo.tpot_ms.map(|t| 1000.0 / t);
    let x_max = points
        .iter()
        .map(|p| p.0)
        .chain(boundary)
        .fold(0.0, f64::max)
        * 1.15;
    let y_max = points.iter().map(|p| p.1).fold(0.0, f64::max) * 1.2;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (900, 560)).into_drawing_area();
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        root.fill(&WHITE).map_err(e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{}: throughput against interactivity", report.model),
                ("sans-serif", 20),
            )
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_max.max(1.0), 0.0..y_max.max(1.0))
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("tokens/s per user (1 / mean TPOT)")
            .y_desc("output tokens/s (all users)")
            .draw()
            .map_err(e)?;
        if let Some(x) = boundary {
            chart
                .draw_series(LineSeries::new(
                    [(x, 0.0), (x, y_max)],
                    ShapeStyle::from(&BLACK.mix(0.5)).stroke_width(1),
                ))
                .map_err(e)?
                .label(format!(
                    "SLO: TPOT ≤ {:.0} ms (right of the line)",
                    report.slo.tpot_ms.unwrap_or_default()
                ))
                .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.mix(0.5)));
        }
        for (i, server) in report.servers.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let mut pts: Vec<_> = server.points.iter().filter(|p| p.completed > 0).collect();
            pts.sort_by(|a, b| a.per_user_tokens_per_s.total_cmp(&b.per_user_tokens_per_s));
            let xy: Vec<(f64, f64)> = pts
                .iter()
                .map(|p| (p.per_user_tokens_per_s, p.output_tokens_per_s))
                .collect();
            chart
                .draw_series(LineSeries::new(xy.clone(), color.stroke_width(2)))
                .map_err(e)?
                .label(server.label.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
            chart
                .draw_series(xy.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(e)?;
            chart
                .draw_series(pts.iter().map(|p| {
                    let cost = p
                        .usd_per_million_output_tokens
                        .map_or(String::new(), |c| format!(" ${c:.3}/1M"));
                    Text::new(
                        format!("{}{cost}", p.load.label()),
                        (p.per_user_tokens_per_s, p.output_tokens_per_s),
                        ("sans-serif", 11).into_font().color(&color),
                    )
                }))
                .map_err(e)?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK.mix(0.3))
            .background_style(WHITE.mix(0.9))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(out)
}
