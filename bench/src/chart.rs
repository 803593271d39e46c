//! The latency plot (`bench/results/proxy.svg`): one panel per percentile (p50, p99, p99.9), request
//! rate across, latency in ms up, one line per setup measured (a TLS pair dashed, in its plain-text
//! pair's colour). Plain SVG written by hand, no plotting library.

use std::fmt::Write as _;

use crate::report::Point;
use crate::setups::Kind;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 380.0;
const PANEL_TOP: f64 = 60.0;
const PANEL_BOTTOM: f64 = 320.0;
const PANEL_LEFT: f64 = 60.0;
const PANEL_WIDTH: f64 = 250.0;
const PANEL_GAP: f64 = 60.0;
/// Horizontal room for one legend entry.
const LEGEND_STEP: f64 = 150.0;
/// Vertical distance between the value labels of successive setups at one point.
const LABEL_STEP: f64 = 10.0;

fn color(kind: Kind) -> &'static str {
    match kind {
        Kind::Direct => "#7f7f7f",
        Kind::Trellis | Kind::TrellisMtls => "#1f77b4",
        Kind::TrellisResilient => "#2ca02c",
        Kind::Haproxy | Kind::HaproxyTls => "#d62728",
    }
}

/// The stroke pattern of a setup's line: dashed for the TLS pairs.
fn dash(kind: Kind) -> &'static str {
    if kind.is_tls() { r#" stroke-dasharray="6 3""# } else { "" }
}

/// A round step that splits `0..max` into about four intervals.
fn nice_step(max: f64) -> f64 {
    let raw = (max / 4.0).max(1e-6);
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|s| *s >= raw);
    step.unwrap_or(10.0 * magnitude)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The SVG document for the fixed-rate `points`; `subtitle` says where and when.
pub fn latency_svg(points: &[Point], subtitle: &str) -> String {
    let mut svg = String::new();
    let _ = write_svg(&mut svg, points, subtitle);
    svg
}

fn write_svg(svg: &mut String, points: &[Point], subtitle: &str) -> std::fmt::Result {
    writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    )?;
    writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#)?;
    writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="16" font-weight="bold">Latency at fixed request rates (coordinated-omission corrected), {} connections, 1 KiB responses</text>"#,
        WIDTH / 2.0,
        points.first().map_or(0, |p| p.connections)
    )?;
    writeln!(
        svg,
        r##"<text x="{}" y="40" text-anchor="middle" fill="#555">{}</text>"##,
        WIDTH / 2.0,
        escape(subtitle)
    )?;
    // The setups measured (`--setups` may leave some out), in their usual order.
    let kinds: Vec<Kind> = Kind::ALL.into_iter().filter(|k| points.iter().any(|p| p.run(*k).is_some())).collect();
    type Pick = fn(&crate::oha::Outcome) -> f64;
    let panels: [(&str, Pick); 3] = [("p50", |o| o.p50_ms), ("p99", |o| o.p99_ms), ("p99.9", |o| o.p999_ms)];
    for (i, (name, pick)) in panels.into_iter().enumerate() {
        let left = PANEL_LEFT + i as f64 * (PANEL_WIDTH + PANEL_GAP);
        let values = points.iter().flat_map(|p| p.runs.iter().map(|r| pick(&r.outcome)));
        let max = values.filter(|v| v.is_finite()).fold(0.0f64, f64::max).max(0.01);
        let step = nice_step(max * 1.1);
        let top_value = (max * 1.1 / step).ceil() * step;
        let y = |v: f64| PANEL_BOTTOM - (v / top_value) * (PANEL_BOTTOM - PANEL_TOP);
        let slot = PANEL_WIDTH / points.len().max(1) as f64;
        let x = |j: usize| left + slot * (j as f64 + 0.5);
        writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{name} (ms)</text>"#,
            left + PANEL_WIDTH / 2.0,
            PANEL_TOP - 6.0
        )?;
        let mut tick = 0.0;
        while tick <= top_value + step / 2.0 {
            let ty = y(tick);
            writeln!(
                svg,
                r##"<line x1="{left}" y1="{ty:.1}" x2="{}" y2="{ty:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
                left + PANEL_WIDTH,
                left - 5.0,
                ty + 4.0,
                trim_number(tick)
            )?;
            tick += step;
        }
        writeln!(
            svg,
            r##"<line x1="{left}" y1="{PANEL_BOTTOM}" x2="{}" y2="{PANEL_BOTTOM}" stroke="#333"/><line x1="{left}" y1="{PANEL_TOP}" x2="{left}" y2="{PANEL_BOTTOM}" stroke="#333"/>"##,
            left + PANEL_WIDTH
        )?;
        for (j, point) in points.iter().enumerate() {
            writeln!(
                svg,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{} rps</text>"#,
                x(j),
                PANEL_BOTTOM + 16.0,
                point.rate
            )?;
        }
        for (k, &kind) in kinds.iter().enumerate() {
            let coords: Vec<(f64, f64, f64)> = points
                .iter()
                .enumerate()
                .filter_map(|(j, p)| p.run(kind).map(|r| (x(j), pick(&r.outcome))))
                .filter(|(_, v)| v.is_finite())
                .map(|(px, v)| (px, y(v), v))
                .collect();
            let path: Vec<String> = coords.iter().map(|(px, py, _)| format!("{px:.1},{py:.1}")).collect();
            writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{}/>"#,
                path.join(" "),
                color(kind),
                dash(kind)
            )?;
            for (px, py, v) in &coords {
                writeln!(svg, r#"<circle cx="{px:.1}" cy="{py:.1}" r="3.5" fill="{}"/>"#, color(kind))?;
                // Labels of the setups are staggered around the point so they do not overlap.
                let offset = (k as f64 - (kinds.len() as f64 - 1.0) / 2.0) * LABEL_STEP;
                writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" font-size="10" fill="{}" stroke="white" stroke-width="3" paint-order="stroke">{v:.3}</text>"#,
                    px + 6.0,
                    py - 4.0 + offset,
                    color(kind)
                )?;
            }
        }
    }
    let legend_left = WIDTH / 2.0 - kinds.len() as f64 * LEGEND_STEP / 2.0;
    for (k, &kind) in kinds.iter().enumerate() {
        let lx = legend_left + k as f64 * LEGEND_STEP;
        writeln!(
            svg,
            r#"<line x1="{lx}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="3"{}/><text x="{}" y="{}">{}</text>"#,
            HEIGHT - 22.0,
            lx + 24.0,
            HEIGHT - 22.0,
            color(kind),
            dash(kind),
            lx + 30.0,
            HEIGHT - 18.0,
            kind.label()
        )?;
    }
    writeln!(svg, "</svg>")
}

fn trim_number(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oha::Outcome;
    use crate::report::Run;

    fn point(rate: u32, p99: [f64; 5]) -> Point {
        let runs = Kind::ALL
            .into_iter()
            .zip(p99)
            .map(|(kind, p99_ms)| Run {
                kind,
                outcome: Outcome { p50_ms: 0.1, p99_ms, p999_ms: p99_ms * 3.0, ..Outcome::default() },
                proxies: None,
                seconds: 1.0,
                machine: Default::default(),
                rounds: Vec::new(),
                round_cpu: Vec::new(),
                redone: 0,
                disturbed: 0,
            })
            .collect();
        Point { rate, connections: 16, runs }
    }

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(1.0), 0.25);
        assert_eq!(nice_step(7.0), 2.0);
        assert_eq!(nice_step(0.3), 0.1);
    }

    #[test]
    fn the_plot_has_a_line_and_labelled_points_per_setup_and_panel() {
        let points = [point(500, [0.2, 0.3, 0.5, 0.35, 0.55]), point(1000, [0.25, 0.4, 0.6, 0.45, 0.7])];
        let svg = latency_svg(&points, "a <test> run");
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 15, "3 panels x 5 setups");
        assert_eq!(svg.matches("<circle").count(), 30);
        assert!(svg.contains(">0.400<"), "p99 of the Trellis pair at 1000 rps is labelled");
        assert!(svg.contains(">0.450<"), "p99 of the Trellis mTLS pair at 1000 rps is labelled");
        assert_eq!(svg.matches("stroke-dasharray").count(), 3 * 2 + 2, "TLS pairs dashed, lines and legend");
        assert!(svg.contains(">Trellis mTLS pair<") && svg.contains(">HAProxy TLS pair<"));
        assert!(svg.contains("a &lt;test&gt; run"));
    }

    #[test]
    fn setups_left_out_get_no_line_and_no_legend() {
        let mut points = [point(500, [0.2, 0.3, 0.5, 0.35, 0.55]), point(1000, [0.25, 0.4, 0.6, 0.45, 0.7])];
        for p in &mut points {
            p.runs.retain(|r| !r.kind.is_tls());
        }
        let svg = latency_svg(&points, "plain text only");
        assert_eq!(svg.matches("<polyline").count(), 9, "3 panels x 3 setups");
        assert!(!svg.contains("stroke-dasharray") && !svg.contains("mTLS"));
    }
}
