//! PNG bar charts of benchmark series, drawn with `plotters` on its bitmap backend. The font
//! (DejaVu Sans) is compiled into the binary, so charts need no system fonts, browser or network.

use std::path::Path;
use std::sync::Once;

use anyhow::anyhow;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const FONT: &str = "sans-serif";

/// Bar colours, first for our server: the comparison reads at a glance.
const COLOURS: [RGBColor; 6] = [
    RGBColor(0x3e, 0xcf, 0x8e),
    RGBColor(0x63, 0x6e, 0x7b),
    RGBColor(0x8c, 0x96, 0xa3),
    RGBColor(0xa6, 0xae, 0xb8),
    RGBColor(0xbf, 0xc5, 0xcc),
    RGBColor(0xd5, 0xd9, 0xde),
];

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font shipped by the crate; a failure only means
        // labels would be missing, which the chart call then reports.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// One bar per `(label, value)`, with the value written above each bar, saved as PNG at `path`.
pub fn bars(path: &Path, title: &str, unit: &str, bars: &[(String, f64)]) -> anyhow::Result<()> {
    register_font();
    let error = |e: &dyn std::fmt::Display| anyhow!("chart {}: {e}", path.display());
    let root = BitMapBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| error(&e))?;
    let top = bars
        .iter()
        .map(|b| b.1)
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE)
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 24))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d((0..bars.len()).into_segmented(), 0f64..top)
        .map_err(|e| error(&e))?;
    let label_of = |x: &SegmentValue<usize>| match x {
        SegmentValue::CenterOf(i) => bars.get(*i).map(|b| b.0.clone()).unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len())
        .x_label_formatter(&label_of)
        .x_label_style((FONT, 16))
        .y_desc(unit)
        .y_label_formatter(&|v| human(*v))
        .y_label_style((FONT, 14))
        .draw()
        .map_err(|e| error(&e))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, value))| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), *value),
                ],
                COLOURS[i % COLOURS.len()].filled(),
            );
            bar.set_margin(0, 0, 20, 20);
            bar
        }))
        .map_err(|e| error(&e))?;
    let above = TextStyle::from((FONT, 16).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, value))| {
            Text::new(human(*value), (SegmentValue::CenterOf(i), *value), above.clone())
        }))
        .map_err(|e| error(&e))?;
    root.present().map_err(|e| error(&e))?;
    Ok(())
}

/// One line with point markers per `(label, points)` series over a shared x axis, and an
/// optional dashed horizontal `(label, y)` goal line, saved as PNG at `path`.
pub fn lines(
    path: &Path,
    title: &str,
    x_unit: &str,
    y_unit: &str,
    series: &[(String, Vec<(f64, f64)>)],
    goal: Option<(&str, f64)>,
) -> anyhow::Result<()> {
    register_font();
    let error = |e: &dyn std::fmt::Display| anyhow!("chart {}: {e}", path.display());
    let all = || series.iter().flat_map(|(_, points)| points.iter());
    let right = all().map(|p| p.0).fold(0.0, f64::max).max(1.0) * 1.05;
    let top = all()
        .map(|p| p.1)
        .chain(goal.map(|g| g.1))
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE)
        * 1.15;
    let root = BitMapBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| error(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..right, 0f64..top)
        .map_err(|e| error(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_unit)
        .y_desc(y_unit)
        .x_label_formatter(&|v| human(*v))
        .x_label_style((FONT, 14))
        .y_label_style((FONT, 14))
        .draw()
        .map_err(|e| error(&e))?;
    for (i, (label, points)) in series.iter().enumerate() {
        let colour = [COLOURS[0], COLOURS[1], COLOURS[2]][i % 3];
        chart
            .draw_series(LineSeries::new(points.iter().copied(), colour.stroke_width(3)))
            .map_err(|e| error(&e))?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3)));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))
            .map_err(|e| error(&e))?;
    }
    if let Some((label, y)) = goal {
        let red = RGBColor(0xd0, 0x45, 0x45);
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, y), (right, y)],
                8,
                6,
                red.stroke_width(2),
            ))
            .map_err(|e| error(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| error(&e))?;
    root.present().map_err(|e| error(&e))?;
    Ok(())
}

/// 1234567 → "1.23M": axis and bar labels stay short.
pub fn human(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if magnitude >= 1e4 {
        format!("{:.0}k", value / 1e3)
    } else if magnitude >= 1e3 {
        format!("{:.1}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_chart_is_written_as_png() {
        let path = std::env::temp_dir().join(format!("realtime-chart-{}.png", std::process::id()));
        bars(&path, "t", "per s", &[("a".into(), 3.0e5), ("b".into(), 1.2e5)]).expect("chart");
        let bytes = std::fs::read(&path).expect("written");
        let _ = std::fs::remove_file(&path);
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn a_line_chart_is_written_as_png() {
        let path = std::env::temp_dir().join(format!("realtime-lines-{}.png", std::process::id()));
        let series = [(
            "p99".to_owned(),
            vec![(250.0, 1.5), (1000.0, 2.5), (4000.0, 40.0)],
        )];
        lines(&path, "t", "per s", "ms", &series, Some(("goal", 10.0))).expect("chart");
        let bytes = std::fs::read(&path).expect("written");
        let _ = std::fs::remove_file(&path);
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn human_numbers() {
        assert_eq!(human(3_400_000.0), "3.40M");
        assert_eq!(human(406_000.0), "406k");
        assert_eq!(human(2_200.0), "2.2k");
        assert_eq!(human(850.0), "850");
    }
}
