//! The drift report as one self-contained HTML page (no scripts, no network): the summary,
//! the table of every tested column (type, test, score, threshold, drift), and per drifted
//! column an inline SVG of both samples' distributions side by side (reference and current
//! bars per bin or value, as shares). Written by hand: a page of a table and bar charts needs
//! no template or plotting crate.

use std::fmt::Write;

use crate::{Distribution, DriftReport};

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:1em 0}\
th,td{border:1px solid #ccc;padding:4px 10px;text-align:left}\
th{background:#f3f3f3}\
tr.drifted td{background:#fde8e8}\
td.num{text-align:right;font-variant-numeric:tabular-nums}\
.plot{margin:1.5em 0}\
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}";

const REFERENCE_COLOUR: &str = "#4c78a8";
const CURRENT_COLOUR: &str = "#e45756";

/// Renders the page. `title` heads it (e.g. the two files compared).
pub fn render(report: &DriftReport, title: &str) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Data drift: {t}</title><style>{STYLE}</style></head><body>\n\
         <h1>Data drift</h1><p class=\"subtitle\">{t}</p>\n",
        t = esc(title)
    );
    let _ = writeln!(
        h,
        "<p id=\"summary\" data-dataset-drift=\"{}\">Dataset drift: <strong>{}</strong> \
         ({} of {} columns drifted, share {:.3}).</p>",
        report.dataset_drift,
        if report.dataset_drift {
            "detected"
        } else {
            "not detected"
        },
        report.number_of_drifted_columns,
        report.number_of_columns,
        report.share_of_drifted_columns
    );
    h.push_str(
        "<table id=\"drift-table\"><thead><tr><th>column</th><th>type</th><th>test</th>\
         <th>drift score</th><th>threshold</th><th>drift</th></tr></thead><tbody>\n",
    );
    for (name, c) in &report.columns {
        let _ = writeln!(
            h,
            "<tr class=\"{cls}\" data-column=\"{n}\"><td>{n}</td><td>{ty}</td><td>{test}</td>\
             <td class=\"num\">{score:.6}</td><td class=\"num\">{thr}</td><td>{drift}</td></tr>",
            cls = if c.drift_detected {
                "drifted"
            } else {
                "stable"
            },
            n = esc(name),
            ty = c.column_type.name(),
            test = c.stattest.name(),
            score = c.drift_score,
            thr = c.threshold,
            drift = if c.drift_detected { "yes" } else { "no" },
        );
    }
    h.push_str("</tbody></table>\n");
    if !report.skipped.is_empty() {
        h.push_str("<p>Not tested:</p><ul id=\"skipped\">\n");
        for s in &report.skipped {
            let _ = writeln!(h, "<li>{}: {}</li>", esc(&s.column), esc(&s.reason));
        }
        h.push_str("</ul>\n");
    }
    let drifted: Vec<_> = report
        .columns
        .iter()
        .filter_map(|(n, c)| c.distribution.as_ref().map(|d| (n, c, d)))
        .collect();
    if !drifted.is_empty() {
        let _ = writeln!(
            h,
            "<h2>Drifted columns</h2><p class=\"legend\">Share of rows per bin:\
             <span style=\"background:{REFERENCE_COLOUR}\"></span>reference\
             <span style=\"background:{CURRENT_COLOUR}\"></span>current</p>"
        );
        for (name, c, d) in drifted {
            let _ = writeln!(
                h,
                "<div class=\"plot\" data-column=\"{n}\"><h3>{n} <small>({} {:.4})</small></h3>{}</div>",
                c.stattest.name(),
                c.drift_score,
                bars(d),
                n = esc(name),
            );
        }
    }
    h.push_str("</body></html>\n");
    h
}

/// A grouped bar chart of the two samples' shares.
fn bars(d: &Distribution) -> String {
    let n = d.labels.len().max(1);
    let (plot_w, plot_h, left, bottom, top) = (720.0f64, 200.0f64, 48.0f64, 90.0f64, 10.0f64);
    let width = left + plot_w + 10.0;
    let height = top + plot_h + bottom;
    let max = d
        .reference
        .iter()
        .chain(&d.current)
        .copied()
        .fold(0.0f64, f64::max)
        .max(1e-12);
    let slot = plot_w / n as f64;
    let bar = (slot * 0.4).max(1.0);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         role=\"img\" viewBox=\"0 0 {width} {height}\">"
    );
    // Axis and the top share.
    let _ = write!(
        s,
        "<line x1=\"{left}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#888\"/>\
         <text x=\"{tx}\" y=\"{ty}\" font-size=\"10\" text-anchor=\"end\">{max:.3}</text>\
         <text x=\"{tx}\" y=\"{y0}\" font-size=\"10\" text-anchor=\"end\">0</text>",
        y0 = top + plot_h,
        x1 = left + plot_w,
        tx = left - 4.0,
        ty = top + 8.0,
    );
    for (i, label) in d.labels.iter().enumerate() {
        let x = left + slot * i as f64 + slot * 0.1;
        for (j, (v, colour)) in [
            (d.reference[i], REFERENCE_COLOUR),
            (d.current[i], CURRENT_COLOUR),
        ]
        .into_iter()
        .enumerate()
        {
            let hgt = v / max * plot_h;
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{hgt:.1}\" fill=\"{colour}\">\
                 <title>{}: {v:.4}</title></rect>",
                x + bar * j as f64,
                top + plot_h - hgt,
                esc(label),
            );
        }
        let lx = x + bar;
        let ly = top + plot_h + 8.0;
        let _ = write!(
            s,
            "<text x=\"{lx:.1}\" y=\"{ly:.1}\" font-size=\"9\" text-anchor=\"end\" \
             transform=\"rotate(-45 {lx:.1} {ly:.1})\">{}</text>",
            esc(&truncate(label, 24))
        );
    }
    s.push_str("</svg>");
    s
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DriftOptions, Values, data_drift};

    #[test]
    fn the_page_has_the_table_and_a_plot_per_drifted_column() {
        let a: Vec<f64> = (0..300).map(|i| f64::from(i % 50)).collect();
        let b: Vec<f64> = a.iter().map(|v| v + 25.0).collect();
        let cat = |s: &str| Values::Str((0..300).map(|i| Some(format!("{s}{}", i % 3))).collect());
        let reference = vec![
            ("steady".to_owned(), Values::Float(a.clone())),
            ("moved".to_owned(), Values::Float(a)),
            ("<kind>".to_owned(), cat("x")),
        ];
        let current = vec![
            ("steady".to_owned(), reference[0].1.clone()),
            ("moved".to_owned(), Values::Float(b)),
            ("<kind>".to_owned(), cat("y")),
        ];
        let options = DriftOptions {
            plots: true,
            ..DriftOptions::default()
        };
        let report = data_drift(&reference, &current, &options).expect("report");
        let page = render(&report, "ref.csv -> cur.csv");
        assert!(page.contains("<table id=\"drift-table\">"));
        assert_eq!(page.matches("<tr class=").count(), 3);
        assert_eq!(page.matches("<svg").count(), 2, "two drifted columns");
        assert!(page.contains("data-column=\"moved\""));
        // Names are escaped.
        assert!(page.contains("&lt;kind&gt;") && !page.contains("<kind>"));
        assert!(page.contains("ref.csv -&gt; cur.csv"));
    }
}
