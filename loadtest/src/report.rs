//! The drill report: JSON for machines, a summary table for the terminal, and one
//! self-contained HTML page (inline SVG and a few lines of script, no external
//! assets): the headline table first, then per fault a close-up ±2 s around it for
//! every target side by side on the same scales ([`zoom`]), then the whole drill per
//! target — throughput, p99 latency and errors per second. Markers (fault injected,
//! replica promoted, proxy detected, routing swapped, first session, first success)
//! are numbered lines with their names in a legend.

use std::fmt::Write;

use crate::drill::DrillResult;

pub mod zoom;

fn opt_ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0} ms")).unwrap_or_else(|| "never".into())
}

/// The action of fault `i`, from the first result that has one.
fn fault_action(results: &[DrillResult], i: usize) -> String {
    results
        .iter()
        .find_map(|r| r.faults.get(i))
        .map(|f| format!("{:?}", f.action))
        .unwrap_or_default()
}

/// Rows: one per measure; columns: one per target.
fn rows(results: &[DrillResult]) -> Vec<(String, Vec<String>)> {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row =
        |name: &str, f: &dyn Fn(&DrillResult) -> String| rows.push((name.to_string(), results.iter().map(f).collect()));
    row("writes ok / failed", &|r| {
        format!("{} / {}", r.writes_ok, r.writes_failed)
    });
    row("reads ok / failed", &|r| format!("{} / {}", r.reads_ok, r.reads_failed));
    let faults = results.iter().map(|r| r.faults.len()).max().unwrap_or(0);
    for i in 0..faults {
        let label = fault_action(results, i);
        row(&format!("outage after fault {} ({label})", i + 1), &|r| {
            opt_ms(r.outage_ms.get(i).copied().flatten())
        });
    }
    row("longest gap between writes", &|r| {
        format!("{:.0} ms", r.longest_write_gap_ms)
    });
    row("write latency p50 / p99 / max", &|r| {
        format!(
            "{:.1} / {:.1} / {:.0} ms",
            r.write_latency.p50_ms, r.write_latency.p99_ms, r.write_latency.max_ms
        )
    });
    let count = |v: Option<usize>| v.map_or("n/a".to_string(), |n| n.to_string());
    row("writes acked by a non-primary", &|r| count(r.acked_by_non_primary));
    row("acked writes missing afterwards", &|r| count(r.missing_writes));
    if results.iter().any(|r| !r.acks_via.is_empty()) {
        row("writes acked through each proxy", &|r| {
            listed(r.acks_via.iter().map(|(p, n)| format!("{p}: {n}")), "n/a")
        });
        row("VIP moves (s)", &|r| {
            listed(
                r.vip_moves
                    .iter()
                    .map(|m| format!("{} at {:.1}", m.to, m.at_ms / 1000.0)),
                "none",
            )
        });
    }
    row("errors by kind", &|r| {
        listed(r.errors.iter().map(|(k, n)| format!("{k}: {n}")), "none")
    });
    rows
}

/// `items` joined with commas, or `empty` when there are none.
fn listed(items: impl Iterator<Item = String>, empty: &str) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        empty.to_string()
    } else {
        items.join(", ")
    }
}

/// The side-by-side table for the terminal (and the closing note).
pub fn table(results: &[DrillResult]) -> String {
    let rows = rows(results);
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(10);
    let cols: Vec<usize> = (0..results.len())
        .map(|i| {
            rows.iter()
                .map(|(_, v)| v[i].len())
                .chain([results[i].target.to_string().len()])
                .max()
                .unwrap_or(10)
        })
        .collect();
    let mut out = String::new();
    let _ = write!(out, "| {:width$} |", "");
    for (r, w) in results.iter().zip(&cols) {
        let _ = write!(out, " {:w$} |", r.target.to_string());
    }
    let _ = write!(out, "\n|{}|", "-".repeat(width + 2));
    for w in &cols {
        let _ = write!(out, "{}|", "-".repeat(w + 2));
    }
    for (name, values) in &rows {
        let _ = write!(out, "\n| {name:width$} |");
        for (v, w) in values.iter().zip(&cols) {
            let _ = write!(out, " {v:w$} |");
        }
    }
    out.push('\n');
    out
}

pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Where the chart's parts go.
struct Geometry {
    left: f64,
    plot_w: f64,
    panel_h: f64,
    /// Seconds on the time axis.
    n: f64,
}

impl Geometry {
    /// The x of `t` (ms since the drill started).
    fn x(&self, t: f64) -> f64 {
        self.left + self.plot_w * (t / 1000.0) / self.n
    }

    /// The width of one second.
    fn bar(&self) -> f64 {
        self.plot_w / self.n
    }
}

/// One SVG timeline for one drill: three panels of per-second bars, then a numbered
/// dashed line for every fault, promotion, first success and proxy moment; the
/// legend's entries, in time order.
fn chart(result: &DrillResult) -> (String, Vec<String>) {
    let (w, h) = (960.0, 450.0);
    let g = Geometry {
        left: 60.0,
        plot_w: w - 60.0 - 20.0,
        panel_h: 110.0,
        n: result.seconds.len().max(1) as f64,
    };
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    bars(&mut svg, result, &g);
    let all = markers(result);
    let shown = all
        .iter()
        .filter(|(at, _, _)| *at >= 0.0 && *at <= g.n * 1000.0)
        .map(|(at, color, label)| zoom::Marker {
            x: g.x(*at),
            color,
            label,
            when: format!("{:.2} s", at / 1000.0),
        })
        .collect();
    let lane = zoom::Lane {
        top: 16.0,
        bottom: 392.0,
        first_row: 416.0,
        rows: 3,
    };
    let legend = zoom::numbered(&mut svg, shown, lane);
    for t in (0..=result.seconds.len()).step_by(5) {
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{}" fill="#445" text-anchor="middle">{t}s</text>"##,
            g.left + g.bar() * t as f64,
            402
        );
    }
    svg.push_str("</svg>");
    (svg, legend)
}

/// The three panels (successes, p99, failures per second) and their bars.
fn bars(svg: &mut String, result: &DrillResult, g: &Geometry) {
    let (left, plot_w, panel_h) = (g.left, g.plot_w, g.panel_h);
    let max_ok = result.seconds.iter().map(|s| s.ok + s.errors).max().unwrap_or(1).max(1) as f64;
    let max_p99 = result.seconds.iter().map(|s| s.p99_ms).fold(1.0, f64::max);
    let panels = [
        ("successful operations per second", 20.0),
        ("p99 latency, ms", 150.0),
        ("failed operations per second", 280.0),
    ];
    for (label, top) in panels {
        let _ = write!(
            svg,
            r##"<rect x="{left}" y="{top}" width="{plot_w}" height="{panel_h}" fill="#fafbfc" stroke="#ccd"/>"##
        );
        let _ = write!(
            svg,
            r##"<text x="{left}" y="{}" fill="#445">{label}</text>"##,
            top - 3.0
        );
    }
    let bar = g.bar();
    for s in &result.seconds {
        let x0 = left + bar * f64::from(s.t);
        let heights = [
            (20.0, panel_h * f64::from(s.ok) / max_ok, "#2e8b57"),
            (150.0, panel_h * s.p99_ms / max_p99, "#4169e1"),
            (280.0, panel_h * f64::from(s.errors) / max_ok, "#c0261b"),
        ];
        for (top, height, color) in heights {
            let _ = write!(
                svg,
                r##"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{height:.1}" fill="{color}"/>"##,
                top + panel_h - height,
                bar * 0.9
            );
        }
    }
    let _ = write!(
        svg,
        r##"<text x="{}" y="34" text-anchor="end" fill="#445">{max_ok:.0}</text>"##,
        left - 4.0
    );
    let _ = write!(
        svg,
        r##"<text x="{}" y="164" text-anchor="end" fill="#445">{max_p99:.0}</text>"##,
        left - 4.0
    );
}

/// The moments to mark: (ms since the start, colour, label).
fn markers(result: &DrillResult) -> Vec<(f64, &'static str, String)> {
    let mut markers = Vec::new();
    for (i, f) in result.faults.iter().enumerate() {
        markers.push((f.injected_ms, "#c0261b", "fault".to_string()));
        if let Some(p) = f.promoted_ms {
            markers.push((p, "#e08a00", "promoted".to_string()));
        }
        if let Some(Some(outage)) = result.outage_ms.get(i) {
            let at = f.effective_ms.unwrap_or(f.injected_ms) + outage;
            markers.push((at, "#2e8b57", "first success".to_string()));
        }
    }
    for m in &result.proxy_markers {
        let color = if m.label.contains("routing swapped") {
            "#7b2cbf"
        } else {
            "#1f77b4"
        };
        markers.push((m.at_ms, color, m.label.clone()));
    }
    markers
}

/// Hovering a legend entry (or its line) thickens the marker it names; the page
/// counts its close-ups into `data-closeups` once it has wired them (the Chromium test
/// reads it: the script ran to its end).
const SCRIPT: &str = r#"<script>
(function () {
  var charts = document.querySelectorAll('.closeup');
  charts.forEach(function (box) {
    box.querySelectorAll('li[data-n]').forEach(function (item) {
      var line = box.querySelector('line.marker[data-n="' + item.dataset.n + '"]');
      if (!line) { return; }
      item.addEventListener('mouseenter', function () { line.setAttribute('stroke-width', '3'); });
      item.addEventListener('mouseleave', function () { line.setAttribute('stroke-width', '1.4'); });
    });
  });
  document.body.dataset.closeups = String(charts.length);
})();
</script>"#;

/// Per fault, the close-ups of every target side by side, each with its legend.
fn closeups(page: &mut String, results: &[DrillResult]) {
    let faults = results.iter().map(|r| r.zooms.len()).max().unwrap_or(0);
    for i in 0..faults {
        let action = fault_action(results, i);
        let _ = write!(
            page,
            "<h2>Fault {}: {} (±2 s)</h2><div class=\"row\">",
            i + 1,
            escape(&action)
        );
        let scales = zoom::scales(results.iter().filter_map(|r| r.zooms.get(i)));
        for r in results {
            let Some(z) = r.zooms.get(i) else { continue };
            let (svg, legend) = zoom::chart(z, scales, &markers(r), &format!("zoom-{}-{i}", r.target));
            let _ = write!(
                page,
                "<div class=\"closeup\"><h3>{}</h3>{svg}<ol class=\"legend\">{}</ol></div>",
                r.target,
                legend.join("")
            );
        }
        page.push_str("</div>");
    }
}

/// The whole report page.
pub fn html(results: &[DrillResult]) -> String {
    let mut page = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>switchyard failover drill</title>\
         <style>body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d2430}table{border-collapse:collapse}\
         th,td{border:1px solid #d5d9e0;padding:.3em .7em;text-align:left}th{background:#eef0f4}\
         .row{display:flex;flex-wrap:wrap;gap:1.5em}.closeup h3{margin:.2em 0}\
         ol.legend{list-style:none;padding:0;margin:.2em 0;font-size:12px;columns:2}</style></head><body>",
    );
    let title = results.first().map(|r| r.scenario.as_str()).unwrap_or("drill");
    let _ = write!(page, "<h1>Failover drill: {}</h1>", escape(title));
    page.push_str("<table><tr><th></th>");
    for r in results {
        let _ = write!(page, "<th>{}</th>", r.target);
    }
    page.push_str("</tr>");
    for (name, values) in rows(results) {
        let _ = write!(page, "<tr><td>{}</td>", escape(&name));
        for v in values {
            let _ = write!(page, "<td>{}</td>", escape(&v));
        }
        page.push_str("</tr>");
    }
    page.push_str("</table>");
    closeups(&mut page, results);
    page.push_str("<h2>The whole drill</h2>");
    for r in results {
        let (svg, legend) = chart(r);
        let _ = write!(
            page,
            "<div class=\"closeup whole\"><h3>{}</h3>{svg}<ol class=\"legend\">{}</ol></div>",
            r.target,
            legend.join("")
        );
    }
    page.push_str("<p>Markers: red fault injected, orange replica promoted, blue proxy detected / first session, purple routing swapped, green first successful write after the fault.</p>");
    page.push_str(SCRIPT);
    page.push_str("</body></html>");
    page
}
