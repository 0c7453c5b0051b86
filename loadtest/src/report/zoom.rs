//! The report's close-ups: per fault, ±2 s around the moment it took effect, every
//! operation as a point (its latency over when it ended; green acknowledged, red
//! failed) above successes and failures per 10 ms, the targets side by side on the
//! same scales. Markers are numbered lines whose names and offsets sit in a legend
//! under the chart; the numbers above the plot take rows so that they do not touch
//! (more than four within 10 px share a row; the legend lists each).

use std::fmt::Write;

use serde::Serialize;

use super::escape;
use crate::workload::Op;

/// How far either side of a fault a close-up reaches, ms.
pub const HALF_WINDOW_MS: f64 = 2000.0;
/// The width of one success/failure bin, ms.
pub const BIN_MS: f64 = 10.0;

/// One operation in a close-up.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Point {
    /// When it ended, ms from the fault (negative: before it).
    pub t_ms: f32,
    /// From its scheduled start to its end, ms.
    pub latency_ms: f32,
    pub ok: bool,
}

/// The operations within [`HALF_WINDOW_MS`] of `at_ms` (ms since the drill started).
pub fn points(ops: &[Op], at_ms: f64) -> Vec<Point> {
    ops.iter()
        .filter(|o| (o.ended_ms - at_ms).abs() <= HALF_WINDOW_MS)
        .map(|o| Point {
            t_ms: (o.ended_ms - at_ms) as f32,
            latency_ms: o.latency_ms().max(0.0) as f32,
            ok: o.result.is_ok(),
        })
        .collect()
}

/// Successes and failures per [`BIN_MS`] across the window.
pub fn bins(points: &[Point]) -> Vec<(u32, u32)> {
    let n = (2.0 * HALF_WINDOW_MS / BIN_MS) as usize;
    let mut bins = vec![(0, 0); n];
    for p in points {
        let i = ((f64::from(p.t_ms) + HALF_WINDOW_MS) / BIN_MS).floor() as usize;
        if let Some(bin) = bins.get_mut(i.min(n - 1)) {
            if p.ok {
                bin.0 += 1;
            } else {
                bin.1 += 1;
            }
        }
    }
    bins
}

/// Scales shared by every target's close-up of one fault.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scales {
    /// The top of the latency axis (log scale from 0.1 ms), ms.
    pub latency_ms: f64,
    /// The most operations in one bin, either way.
    pub per_bin: u32,
}

/// The scales that fit every one of `zooms` (one fault's, one per target).
pub fn scales<'a>(zooms: impl IntoIterator<Item = &'a Zoom>) -> Scales {
    let mut scales = Scales {
        latency_ms: 1.0,
        per_bin: 1,
    };
    for zoom in zooms {
        for p in &zoom.points {
            scales.latency_ms = scales.latency_ms.max(f64::from(p.latency_ms));
        }
        for (ok, failed) in bins(&zoom.points) {
            scales.per_bin = scales.per_bin.max(ok).max(failed);
        }
    }
    scales
}

/// A close-up of one fault for one target.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Zoom {
    /// The fault's moment (when it took effect, else when it was injected), ms since
    /// the drill started.
    pub at_ms: f64,
    pub points: Vec<Point>,
}

const W: f64 = 470.0;
const LEFT: f64 = 46.0;
const PLOT_W: f64 = W - LEFT - 24.0;
const LAT_TOP: f64 = 40.0;
const LAT_H: f64 = 150.0;
const BIN_TOP: f64 = 215.0;
const BIN_H: f64 = 90.0;

fn x(t_ms: f64) -> f64 {
    LEFT + PLOT_W * (t_ms + HALF_WINDOW_MS) / (2.0 * HALF_WINDOW_MS)
}

/// The y of a latency on the log axis from 0.1 ms to `top`.
fn y_latency(latency_ms: f64, top: f64) -> f64 {
    let (lo, hi) = (0.1f64.ln(), top.max(0.2).ln());
    let v = (latency_ms.max(0.1).ln() - lo) / (hi - lo);
    LAT_TOP + LAT_H * (1.0 - v.clamp(0.0, 1.0))
}

/// The SVG of one close-up; `markers` are (ms since the drill started, colour, label),
/// numbered in time order; returns the SVG and the legend's entries.
pub fn chart(zoom: &Zoom, scales: Scales, markers: &[(f64, &str, String)], id: &str) -> (String, Vec<String>) {
    let h = BIN_TOP + BIN_H + 34.0;
    let mut svg = format!(
        r#"<svg class="zoom" id="{id}" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" font-family="sans-serif" font-size="10">"#
    );
    frame(&mut svg, scales);
    for p in &zoom.points {
        let color = if p.ok { "#2e8b57" } else { "#c0261b" };
        let _ = write!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="1.6" fill="{color}" fill-opacity="0.7"/>"#,
            x(f64::from(p.t_ms)),
            y_latency(f64::from(p.latency_ms), scales.latency_ms)
        );
    }
    let bar = PLOT_W / (2.0 * HALF_WINDOW_MS / BIN_MS);
    let half = BIN_H / 2.0;
    for (i, (ok, failed)) in bins(&zoom.points).into_iter().enumerate() {
        let x0 = LEFT + bar * i as f64;
        let up = half * f64::from(ok) / f64::from(scales.per_bin);
        let down = half * f64::from(failed) / f64::from(scales.per_bin);
        if ok > 0 {
            let _ = write!(
                svg,
                r##"<rect x="{x0:.2}" y="{:.1}" width="{bar:.2}" height="{up:.1}" fill="#2e8b57"/>"##,
                BIN_TOP + half - up
            );
        }
        if failed > 0 {
            let _ = write!(
                svg,
                r##"<rect x="{x0:.2}" y="{:.1}" width="{bar:.2}" height="{down:.1}" fill="#c0261b"/>"##,
                BIN_TOP + half
            );
        }
    }
    let legend = marker_lines(&mut svg, zoom, markers);
    svg.push_str("</svg>");
    (svg, legend)
}

/// Axes, grid and labels.
fn frame(svg: &mut String, scales: Scales) {
    for (top, height, label) in [
        (LAT_TOP, LAT_H, "latency of every operation, ms (log)"),
        (BIN_TOP, BIN_H, "per 10 ms: acknowledged up, failed down"),
    ] {
        let _ = write!(
            svg,
            r##"<rect x="{LEFT}" y="{top}" width="{PLOT_W}" height="{height}" fill="#fafbfc" stroke="#ccd"/><text x="{LEFT}" y="{}" fill="#445">{label}</text>"##,
            top - 4.0
        );
    }
    for step in -4..=4 {
        let t = f64::from(step) * 500.0;
        let gx = x(t);
        let stroke = if step == 0 { "#889" } else { "#e3e6ea" };
        let _ = write!(
            svg,
            r##"<line x1="{gx:.1}" y1="{LAT_TOP}" x2="{gx:.1}" y2="{}" stroke="{stroke}"/><text x="{gx:.1}" y="{}" fill="#445" text-anchor="middle">{:+.1} s</text>"##,
            BIN_TOP + BIN_H,
            BIN_TOP + BIN_H + 12.0,
            t / 1000.0
        );
    }
    let mut tick = 0.1;
    while tick <= scales.latency_ms * 1.01 {
        let _ = write!(
            svg,
            r##"<text x="{}" y="{:.1}" fill="#445" text-anchor="end">{tick}</text>"##,
            LEFT - 3.0,
            y_latency(tick, scales.latency_ms) + 3.0
        );
        tick *= 10.0;
    }
    let _ = write!(
        svg,
        r##"<text x="{}" y="{}" fill="#445" text-anchor="end">{}</text>"##,
        LEFT - 3.0,
        BIN_TOP + 8.0,
        scales.per_bin
    );
}

/// The row (0 to `rows - 1`) of each marker's number, for markers at `xs` (in
/// order): the first row whose last number is far enough to the left not to touch
/// this one; when every row is taken, the one whose last number is furthest left.
pub(crate) fn label_rows(xs: &[f64], rows: usize) -> Vec<usize> {
    const GAP: f64 = 10.0;
    let mut last = vec![f64::NEG_INFINITY; rows.max(1)];
    xs.iter()
        .map(|&x| {
            let row = last.iter().position(|&l| x - l >= GAP).unwrap_or_else(|| {
                (0..last.len())
                    .min_by(|&a, &b| last[a].total_cmp(&last[b]))
                    .unwrap_or(0)
            });
            last[row] = x;
            row
        })
        .collect()
}

/// The markers inside the window as numbered dashed lines; the legend's entries.
fn marker_lines(svg: &mut String, zoom: &Zoom, markers: &[(f64, &str, String)]) -> Vec<String> {
    let inside = markers
        .iter()
        .filter(|(at, _, _)| (at - zoom.at_ms).abs() <= HALF_WINDOW_MS)
        .map(|(at, color, label)| Marker {
            x: x(at - zoom.at_ms),
            color,
            label,
            when: format!("{:+.0} ms", at - zoom.at_ms),
        })
        .collect();
    let lane = Lane {
        top: LAT_TOP,
        bottom: BIN_TOP + BIN_H,
        first_row: 9.0,
        rows: 4,
    };
    numbered(svg, inside, lane)
}

/// One marker to draw: where, in what colour, its name and when it was.
pub(crate) struct Marker<'a> {
    pub(crate) x: f64,
    pub(crate) color: &'a str,
    pub(crate) label: &'a str,
    pub(crate) when: String,
}

/// Where a chart's marker lines run and their numbers go.
pub(crate) struct Lane {
    /// The lines' ends.
    pub(crate) top: f64,
    pub(crate) bottom: f64,
    /// The baseline of the first row of numbers (rows are 9 px apart).
    pub(crate) first_row: f64,
    pub(crate) rows: usize,
}

/// Draws `markers` as dashed lines numbered in the order of their x (the numbers in
/// rows placed by [`label_rows`], so that they do not touch); the legend's entries,
/// `N name at when`, in the same order.
pub(crate) fn numbered(svg: &mut String, mut markers: Vec<Marker<'_>>, lane: Lane) -> Vec<String> {
    markers.sort_by(|a, b| a.x.total_cmp(&b.x));
    let xs: Vec<f64> = markers.iter().map(|m| m.x).collect();
    let rows = label_rows(&xs, lane.rows);
    let mut legend = Vec::new();
    for (i, m) in markers.iter().enumerate() {
        let (n, mx, color) = (i + 1, m.x, m.color);
        let row = lane.first_row + 9.0 * rows[i] as f64;
        let _ = write!(
            svg,
            r#"<line class="marker" data-n="{n}" x1="{mx:.1}" y1="{}" x2="{mx:.1}" y2="{}" stroke="{color}" stroke-width="1.4" stroke-dasharray="4 2"/><text x="{mx:.1}" y="{row}" fill="{color}" text-anchor="middle" font-weight="bold">{n}</text>"#,
            lane.top, lane.bottom
        );
        legend.push(format!(
            r#"<li data-n="{n}"><b style="color:{color}">{n}</b> {} at {}</li>"#,
            escape(m.label),
            m.when
        ));
    }
    legend
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t_ms: f32, ok: bool) -> Point {
        Point {
            t_ms,
            latency_ms: 1.0,
            ok,
        }
    }

    #[test]
    fn bins_count_each_side_in_its_10_ms() {
        let bins = bins(&[
            point(-2000.0, true),
            point(-1995.0, false),
            point(0.0, true),
            point(2000.0, false),
        ]);
        assert_eq!(bins.len(), 400);
        assert_eq!(bins[0], (1, 1), "the first 10 ms");
        assert_eq!(bins[200], (1, 0), "the fault's own bin");
        assert_eq!(bins[399], (0, 1), "the window's end falls in the last bin");
    }

    #[test]
    fn markers_are_numbered_in_time_order_and_only_inside_the_window() {
        let zoom = Zoom {
            at_ms: 10_000.0,
            points: vec![point(0.0, true)],
        };
        let markers = vec![
            (10_300.0, "#1f77b4", "routing swapped".to_string()),
            (10_000.0, "#c0261b", "fault".to_string()),
            (14_000.0, "#2e8b57", "later".to_string()),
            (10_010.0, "#7b2cbf", "proxy <detected>".to_string()),
        ];
        let scales = Scales {
            latency_ms: 10.0,
            per_bin: 1,
        };
        let (svg, legend) = chart(&zoom, scales, &markers, "z");
        assert_eq!(legend.len(), 3, "{legend:?}");
        assert!(legend[0].contains("fault at +0 ms"), "{}", legend[0]);
        assert!(legend[1].contains("proxy &lt;detected&gt; at +10 ms"), "{}", legend[1]);
        assert!(legend[2].contains("routing swapped at +300 ms"), "{}", legend[2]);
        assert_eq!(svg.matches("class=\"marker\"").count(), 3);
        assert_eq!(svg.matches("<circle").count(), 1);
    }

    #[test]
    fn marker_numbers_take_the_first_row_where_they_touch_nothing() {
        assert_eq!(label_rows(&[0.0, 50.0, 100.0], 4), [0, 0, 0], "far apart: one row");
        assert_eq!(label_rows(&[0.0, 2.0, 4.0, 30.0], 4), [0, 1, 2, 0]);
        // Five at one spot over four rows: the fifth goes where the oldest number is.
        assert_eq!(label_rows(&[5.0; 5], 4), [0, 1, 2, 3, 0]);
    }

    #[test]
    fn targets_share_the_scales_that_fit_them_all() {
        let slow = Zoom {
            at_ms: 0.0,
            points: vec![Point {
                latency_ms: 900.0,
                ..point(0.0, true)
            }],
        };
        let busy = Zoom {
            at_ms: 0.0,
            points: (0..7).map(|i| point(i as f32, false)).collect(),
        };
        let shared = scales([&slow, &busy]);
        assert_eq!(
            shared,
            Scales {
                latency_ms: 900.0,
                per_bin: 7
            }
        );
        assert_eq!(scales([&busy]).latency_ms, 1.0, "alone, its own");
    }

    #[test]
    fn the_latency_axis_is_logarithmic_and_clamped() {
        let top = 1000.0;
        assert_eq!(y_latency(1000.0, top), LAT_TOP);
        assert_eq!(y_latency(0.01, top), LAT_TOP + LAT_H, "below 0.1 ms sits on the floor");
        let one = y_latency(1.0, top);
        let ten = y_latency(10.0, top);
        let hundred = y_latency(100.0, top);
        assert!(
            ((one - ten) - (ten - hundred)).abs() < 1e-9,
            "decades are evenly spaced"
        );
    }
}
