//! The report page: one self-contained HTML document (inline CSS and SVG, nothing fetched) with the builds'
//! size against KLD and against perplexity, decode speed, the part sensitivity strip and the acceptance table.

use std::fmt::Write;

/// One validated build, as the page shows it.
pub struct Build {
    pub name: String,
    pub bytes: u64,
    pub ppl: f64,
    pub mean_kld: f64,
    pub tokens_per_second: f64,
    pub pass: bool,
    pub chosen: bool,
    /// (criterion name, value, pass), in the rule's order.
    pub criteria: Vec<(String, f64, bool)>,
}

/// The original, as the reference point: its FP16 size, its perplexity and its FP16 decode speed.
pub struct Original {
    pub name: String,
    pub fp16_bytes: u64,
    pub ppl: f64,
    pub fp16_tokens_per_second: f64,
}

pub struct Page {
    pub title: String,
    pub original: Original,
    pub builds: Vec<Build>,
    /// (part label, mean KLD) in model order, and the build they were measured on.
    pub sensitivity: Option<(String, Vec<(String, f64)>)>,
    /// quantization_summary.json's verdict, when there is one.
    pub verdict: Option<String>,
}

/// Colors of the points: the test of the page looks for them in its screenshot.
pub const PASS_COLOR: &str = "#2ca02c";
pub const FAIL_COLOR: &str = "#d62728";
const REFERENCE_COLOR: &str = "#7f7f7f";

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 56.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

struct Point<'a> {
    label: &'a str,
    x: f64,
    y: f64,
    color: &'static str,
    chosen: bool,
}

/// An axis: maps values to pixels and gives its ticks.
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Axis {
    /// Covers `values` (positive when `log`), linear from 0 or logarithmic by whole decades.
    fn covering(values: &[f64], log: bool) -> Axis {
        let max = values.iter().copied().fold(f64::MIN, f64::max);
        let min = values.iter().copied().fold(f64::MAX, f64::min);
        if log {
            let lo = 10f64.powf(min.max(1e-12).log10().floor());
            let hi = 10f64.powf(max.max(1e-12).log10().ceil()).max(lo * 10.0);
            Axis { lo, hi, log }
        } else {
            Axis { lo: 0.0, hi: if max > 0.0 { max * 1.12 } else { 1.0 }, log }
        }
    }

    /// Where `v` falls between 0 and 1.
    fn fraction(&self, v: f64) -> f64 {
        match self.log {
            true => (v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10()),
            false => (v - self.lo) / (self.hi - self.lo),
        }
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let decades = (self.hi / self.lo).log10().round() as i32;
            let steps: &[f64] = if decades <= 2 { &[1.0, 2.0, 5.0] } else { &[1.0] };
            let mut out = Vec::new();
            for d in 0..=decades {
                for s in steps {
                    let v = self.lo * 10f64.powi(d) * s;
                    if v <= self.hi * 1.0001 {
                        out.push(v);
                    }
                }
            }
            return out;
        }
        let raw = (self.hi - self.lo) / 5.0;
        let magnitude = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(raw);
        (0..).map(|i| self.lo + i as f64 * step).take_while(|v| *v <= self.hi * 1.0001).collect()
    }
}

fn tick_label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{}", (v * 10.0).round() / 10.0)
    } else {
        format!("{}", v)
    }
}

/// Pixels of one label line, and the width of a label character (11px sans-serif, generously).
const LABEL_HEIGHT: f64 = 13.0;
const LABEL_CHAR: f64 = 6.5;

/// The baseline of each point's label: beside its point, moved down past labels already placed that it would
/// overlap (points are placed top to bottom).
fn label_rows(points: &[Point], at: &[(f64, f64)]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| at[a].1.total_cmp(&at[b].1));
    let mut placed: Vec<(f64, f64, f64)> = Vec::new(); // x from, x to, baseline
    let mut rows = vec![0.0; points.len()];
    for i in order {
        let (x0, x1) = (at[i].0 + 9.0, at[i].0 + 9.0 + LABEL_CHAR * points[i].label.chars().count() as f64);
        let mut y = at[i].1 + 4.0;
        while let Some(&(_, _, other)) =
            placed.iter().find(|(a, b, other)| *a < x1 && x0 < *b && (y - other).abs() < LABEL_HEIGHT)
        {
            y = other + LABEL_HEIGHT;
        }
        placed.push((x0, x1, y));
        rows[i] = y;
    }
    rows
}

/// A scatter plot of `points`, each labeled; `log_y` for a logarithmic y axis.
fn scatter(title: &str, x_label: &str, y_label: &str, points: &[Point], log_y: bool) -> String {
    let xs: Vec<f64> = points.iter().map(|p| p.x).collect();
    let ys: Vec<f64> = points.iter().map(|p| p.y).collect();
    let (x_axis, y_axis) = (Axis::covering(&xs, false), Axis::covering(&ys, log_y));
    let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let px = |v: f64| LEFT + x_axis.fraction(v) * pw;
    let py = |v: f64| TOP + (1.0 - y_axis.fraction(v)) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{t}"><text x="{cx}" y="20" text-anchor="middle" class="title">{t}</text>"##,
        t = escape(title),
        cx = WIDTH / 2.0
    );
    for v in x_axis.ticks() {
        let x = px(v);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{b}" class="grid"/><text x="{x:.1}" y="{ty}" text-anchor="middle">{l}</text>"##,
            b = TOP + ph,
            ty = TOP + ph + 16.0,
            l = tick_label(v)
        );
    }
    for v in y_axis.ticks() {
        let y = py(v);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{r}" y2="{y:.1}" class="grid"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{l}</text>"##,
            r = LEFT + pw,
            tx = LEFT - 6.0,
            ty = y + 4.0,
            l = tick_label(v)
        );
    }
    let _ = write!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" class="frame"/><text x="{cx}" y="{xy}" text-anchor="middle">{xl}</text><text transform="translate(18 {cy}) rotate(-90)" text-anchor="middle">{yl}</text>"##,
        cx = LEFT + pw / 2.0,
        xy = HEIGHT - 12.0,
        cy = TOP + ph / 2.0,
        xl = escape(x_label),
        yl = escape(y_label)
    );
    let at: Vec<(f64, f64)> = points.iter().map(|p| (px(p.x), py(p.y))).collect();
    let label_y = label_rows(points, &at);
    // Discs first, labels over them, each label with a white halo: every build stays legible in a crowd.
    for (p, &(x, y)) in points.iter().zip(&at) {
        let stroke = if p.chosen { r##" stroke="#000" stroke-width="2.5""## } else { "" };
        let _ = write!(s, r##"<circle cx="{x:.1}" cy="{y:.1}" r="6" fill="{c}"{stroke}/>"##, c = p.color);
    }
    for ((p, &(x, y)), ly) in points.iter().zip(&at).zip(label_y) {
        if (ly - (y + 4.0)).abs() > 1.0 {
            // A label moved off its point's row keeps a leader line to it.
            let (lx, ty) = (x + 8.0, ly - 4.0);
            let _ = write!(s, r##"<line x1="{x:.1}" y1="{y:.1}" x2="{lx:.1}" y2="{ty:.1}" class="leader"/>"##);
        }
        let _ =
            write!(s, r##"<text x="{lx:.1}" y="{ly:.1}" class="label">{l}</text>"##, lx = x + 9.0, l = escape(p.label));
    }
    s.push_str("</svg>");
    s
}

/// Horizontal bars of decode tokens/s: the original's FP16 build, then every build.
fn speed_bars(page: &Page) -> String {
    let mut rows: Vec<(&str, f64, &str)> =
        vec![("FP16 (original)", page.original.fp16_tokens_per_second, REFERENCE_COLOR)];
    for b in &page.builds {
        rows.push((&b.name, b.tokens_per_second, if b.pass { PASS_COLOR } else { FAIL_COLOR }));
    }
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1e-9);
    let (row_h, label_w, bar_w) = (24.0, 220.0, 380.0);
    let height = TOP + rows.len() as f64 * row_h + 10.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" role="img" aria-label="decode speed"><text x="{cx}" y="20" text-anchor="middle" class="title">Decode tokens/s (llama-bench tg, median)</text>"##,
        cx = WIDTH / 2.0
    );
    for (i, (name, tps, color)) in rows.iter().enumerate() {
        let y = TOP + i as f64 * row_h;
        let w = bar_w * tps / max;
        let _ = write!(
            s,
            r##"<text x="{lx}" y="{ty:.1}" text-anchor="end">{n}</text><rect x="{label_w}" y="{y:.1}" width="{w:.1}" height="{h}" fill="{color}" opacity="0.75"/><text x="{vx:.1}" y="{ty:.1}">{tps:.1}</text>"##,
            lx = label_w - 8.0,
            ty = y + 15.0,
            n = escape(name),
            h = row_h - 6.0,
            vx = label_w + w + 6.0
        );
    }
    s.push_str("</svg>");
    s
}

/// One cell per part, darker the more KL-divergence the part alone costs.
fn sensitivity_strip(of: &str, parts: &[(String, f64)]) -> String {
    let max = parts.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-12);
    let cell = ((WIDTH - 2.0 * 20.0) / parts.len().max(1) as f64).min(40.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="110" role="img" aria-label="part sensitivity"><text x="{cx}" y="20" text-anchor="middle" class="title">Sensitivity: mean KLD with one part of {of} quantized (max {max:.4})</text>"##,
        cx = WIDTH / 2.0,
        of = escape(of)
    );
    for (i, (label, kld)) in parts.iter().enumerate() {
        let t = kld / max;
        // White to dark orange.
        let (r, g, b) = (255.0 - t * 25.0, 255.0 - t * 170.0, 255.0 - t * 242.0);
        let x = 20.0 + i as f64 * cell;
        let _ = write!(
            s,
            r##"<rect x="{x:.1}" y="34" width="{w:.1}" height="40" fill="rgb({r:.0},{g:.0},{b:.0})" stroke="#ccc"><title>{l}: {kld:.5}</title></rect><text x="{tx:.1}" y="90" text-anchor="middle" class="small">{l}</text>"##,
            w = cell,
            tx = x + cell / 2.0,
            l = escape(label)
        );
    }
    s.push_str("</svg>");
    s
}

fn acceptance_table(page: &Page) -> String {
    let names: Vec<&str> =
        page.builds.first().map_or(Vec::new(), |b| b.criteria.iter().map(|c| c.0.as_str()).collect());
    let mut s = String::from("<table><tr><th>build</th><th>MB</th><th>PPL</th><th>mean KLD</th>");
    for n in &names {
        let _ = write!(s, "<th>{}</th>", escape(n));
    }
    s.push_str("<th>verdict</th></tr>");
    for b in &page.builds {
        let chosen = if b.chosen { " (chosen)" } else { "" };
        let _ = write!(
            s,
            "<tr><td>{}{chosen}</td><td>{:.1}</td><td>{:.3}</td><td>{:.5}</td>",
            escape(&b.name),
            megabytes(b.bytes),
            b.ppl,
            b.mean_kld
        );
        for (_, value, pass) in &b.criteria {
            let _ = write!(s, r#"<td class="{}">{value:.3}</td>"#, if *pass { "pass" } else { "fail" });
        }
        let _ = write!(s, r#"<td class="{0}">{0}</td></tr>"#, if b.pass { "pass" } else { "fail" });
    }
    s.push_str("</table>");
    s
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:1480px}\
svg{background:#fff;margin:8px 16px 8px 0}svg text{font-size:12px;fill:#222}svg .title{font-size:14px;font-weight:bold}\
svg .label{font-size:11px;paint-order:stroke;stroke:#fff;stroke-width:3px}svg .small{font-size:10px}.grid{stroke:#e4e4e4}.leader{stroke:#999;stroke-width:0.8}.frame{fill:none;stroke:#888}\
table{border-collapse:collapse;margin-top:8px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}\
td:first-child{text-align:left}.pass{background:#e6f4ea}.fail{background:#fde8e8}.verdict{font-size:16px;margin:8px 0}\
.row{display:flex;flex-wrap:wrap;align-items:flex-start}";

/// The whole page.
pub fn render(page: &Page) -> String {
    let o = &page.original;
    fn point(b: &Build, y: f64) -> Point<'_> {
        let color = if b.pass { PASS_COLOR } else { FAIL_COLOR };
        Point { label: &b.name, x: megabytes(b.bytes), y, color, chosen: b.chosen }
    }
    let kld: Vec<Point> = page.builds.iter().map(|b| point(b, b.mean_kld)).collect();
    let mut ppl: Vec<Point> = page.builds.iter().map(|b| point(b, b.ppl)).collect();
    ppl.push(Point {
        label: "original (FP16)",
        x: megabytes(o.fp16_bytes),
        y: o.ppl,
        color: REFERENCE_COLOR,
        chosen: false,
    });
    let spread = ppl.iter().map(|p| p.y).fold(0.0, f64::max) / ppl.iter().map(|p| p.y).fold(f64::MAX, f64::min);

    let mut html = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body><h1>{t}</h1>",
        t = escape(&page.title)
    );
    if let Some(v) = &page.verdict {
        let _ = write!(html, r#"<p class="verdict">{}</p>"#, escape(v));
    }
    let _ = write!(
        html,
        "<p>Green: passes the acceptance rule; red: fails it; black ring: the build --accept chose. Sizes are weight \
         bytes (MB = 10<sup>6</sup> bytes); KLD and perplexity against {} on the validation corpus.</p>",
        escape(&o.name)
    );
    html.push_str("<div class=\"row\">");
    html.push_str(&scatter("Size against mean KLD", "weights (MB)", "mean KLD (log)", &kld, true));
    html.push_str(&scatter("Size against perplexity", "weights (MB)", "perplexity", &ppl, spread > 4.0));
    html.push_str("</div><div class=\"row\">");
    html.push_str(&speed_bars(page));
    if let Some((of, parts)) = &page.sensitivity {
        html.push_str(&sensitivity_strip(of, parts));
    }
    html.push_str("</div>");
    html.push_str("<h2>Acceptance</h2>");
    html.push_str(&acceptance_table(page));
    html.push_str("</body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_cover_their_values_with_round_ticks() {
        let linear = Axis::covering(&[12.0, 71.5, 140.0], false);
        assert_eq!((linear.lo, linear.ticks()), (0.0, vec![0.0, 50.0, 100.0, 150.0]));
        let close =
            |a: &[f64], b: &[f64]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x / y - 1.0).abs() < 1e-9);
        let log = Axis::covering(&[0.004, 0.6, 3.1], true);
        assert!(close(&[log.lo, log.hi], &[0.001, 10.0]), "{} {}", log.lo, log.hi);
        assert!(close(&log.ticks(), &[0.001, 0.01, 0.1, 1.0, 10.0]), "{:?}", log.ticks());
        assert!((log.fraction(0.01) - 0.25).abs() < 1e-9);
        let decade = Axis::covering(&[20.0, 30.0], true).ticks();
        assert!(close(&decade, &[10.0, 20.0, 50.0, 100.0]), "one decade: 1, 2, 5 steps: {decade:?}");
    }

    #[test]
    fn overlapping_labels_move_down_and_others_stay() {
        let p = |label, y| Point { label, x: 0.0, y, color: PASS_COLOR, chosen: false };
        let points = [p("first", 0.0), p("second", 0.0), p("far", 0.0)];
        let rows = label_rows(&points, &[(100.0, 50.0), (101.0, 52.0), (400.0, 51.0)]);
        assert_eq!(rows, vec![54.0, 54.0 + LABEL_HEIGHT, 55.0]);
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }
}
