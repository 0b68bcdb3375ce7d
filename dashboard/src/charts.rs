//! Inline SVG charts drawn on the server (no chart library, no JavaScript). Only numbers and
//! escaped labels go into the markup.

use std::fmt::Write;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 10.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn nice_max(max: u64) -> u64 {
    if max <= 4 {
        // Small axes count 0 to 4, so every tick is a whole number.
        return 4;
    }
    let magnitude = 10u64.pow((max as f64).log10().floor() as u32);
    for step in [1, 2, 5, 10] {
        if max <= step * magnitude {
            return step * magnitude;
        }
    }
    10 * magnitude
}

fn frame(title: &str, max: u64, first: &str, last: &str, body: &str) -> String {
    let plot_h = HEIGHT - BOTTOM - TOP;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{title}" xmlns="http://www.w3.org/2000/svg">"#,
        title = escape(title)
    );
    let _ = write!(svg, "<title>{}</title>", escape(title));
    for i in 0..=4u32 {
        let y = TOP + plot_h - plot_h * f64::from(i) / 4.0;
        let value = max as f64 * f64::from(i) / 4.0;
        let value = if value.fract() == 0.0 {
            format!("{value:.0}")
        } else {
            format!("{value:.1}")
        };
        let _ = write!(
            svg,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{WIDTH}" y2="{y:.1}" class="grid"/><text x="{x:.1}" y="{ty:.1}" class="axis" text-anchor="end">{value}</text>"#,
            x = LEFT - 6.0,
            ty = y + 4.0
        );
    }
    svg.push_str(body);
    let _ = write!(
        svg,
        r#"<text x="{LEFT}" y="{y}" class="axis">{first}</text><text x="{WIDTH}" y="{y}" class="axis" text-anchor="end">{last}</text></svg>"#,
        y = HEIGHT - 6.0,
        first = escape(first),
        last = escape(last)
    );
    svg
}

/// A bar chart of `values` (one bar each), labelled by the first and last of `labels`.
pub(crate) fn bars(title: &str, labels: &[String], values: &[u64]) -> String {
    let max = nice_max(values.iter().copied().max().unwrap_or(0));
    let plot_w = WIDTH - LEFT;
    let plot_h = HEIGHT - BOTTOM - TOP;
    let n = values.len().max(1) as f64;
    let slot = plot_w / n;
    let mut body = String::new();
    for (i, (value, label)) in values.iter().zip(labels).enumerate() {
        let h = plot_h * (*value as f64) / (max as f64);
        let x = LEFT + slot * i as f64 + slot * 0.1;
        let _ = write!(
            body,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" class="bar"><title>{label}: {value}</title></rect>"#,
            y = TOP + plot_h - h,
            w = slot * 0.8,
            label = escape(label)
        );
    }
    frame(
        title,
        max,
        labels.first().map_or("", String::as_str),
        labels.last().map_or("", String::as_str),
        &body,
    )
}

/// A line chart of `values`, labelled by the first and last of `labels`.
pub(crate) fn line(title: &str, first: &str, last: &str, values: &[u64]) -> String {
    let max = nice_max(values.iter().copied().max().unwrap_or(0));
    let plot_w = WIDTH - LEFT;
    let plot_h = HEIGHT - BOTTOM - TOP;
    let n = (values.len().max(2) - 1) as f64;
    let mut points = String::new();
    for (i, value) in values.iter().enumerate() {
        let x = LEFT + plot_w * i as f64 / n;
        let y = TOP + plot_h - plot_h * (*value as f64) / (max as f64);
        let _ = write!(points, "{x:.1},{y:.1} ");
    }
    let body = format!(r#"<polyline points="{}" class="line"/>"#, points.trim_end());
    frame(title, max, first, last, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_escaped_labels() {
        let svg = bars("Messages <per day>", &["a<b".into(), "c".into()], &[3, 7]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("Messages &lt;per day&gt;"));
        assert!(svg.contains("a&lt;b: 3"));
        assert!(!svg.contains("a<b"));
        assert_eq!(nice_max(7), 10);
        assert_eq!(nice_max(130), 200);
        assert_eq!(nice_max(0), 4);
        assert_eq!(nice_max(3), 4);
        assert!(bars("x", &["a".into()], &[1]).contains(">3</text>"));
        let svg = line("x", "start", "end", &[0, 5, 2]);
        assert!(svg.contains("<polyline"));
    }
}
