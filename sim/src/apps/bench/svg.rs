//! The report as an SVG bar chart (`ism-sim bench --svg`).

use std::fmt::Write as _;

use super::report::{fmt_ratio, fmt_value};
use super::{BenchReport, Metric, Transport};

impl BenchReport {
    /// A bar chart: one panel per metric, one bar per transport (median, with a min–max
    /// whisker), each labelled with its value and its ratio to TCP.
    pub fn to_svg(&self) -> String {
        const W: f64 = 900.0;
        const LABEL_W: f64 = 190.0;
        const BAR_H: f64 = 22.0;
        const GAP: f64 = 6.0;
        const PANEL_HEAD: f64 = 34.0;
        const PANEL_GAP: f64 = 22.0;
        // Cross-process rows in lighter shades of their in-process rows' colours.
        const COLORS: [&str; 8] = [
            "#7f7f7f", "#bcbd22", "#1f77b4", "#2ca02c", "#d62728", "#aec7e8", "#98df8a", "#ff9896",
        ];
        let n = Transport::ALL.len() as f64;
        let panel_h = PANEL_HEAD + n * (BAR_H + GAP);
        let top = 76.0;
        let h = top + Metric::ALL.len() as f64 * (panel_h + PANEL_GAP) + 10.0;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\" viewBox=\"0 0 {W} {h}\" font-family=\"DejaVu Sans, Arial, sans-serif\" font-size=\"13\">"
        );
        let _ = writeln!(o, "<rect width=\"{W}\" height=\"{h}\" fill=\"white\"/>");
        let _ = writeln!(
            o,
            "<text x=\"12\" y=\"24\" font-size=\"17\" font-weight=\"bold\">{}</text>",
            xml("ism-sim bench: TCP, UNIX and SMC-D (simulated ISM) side by side")
        );
        let _ = writeln!(
            o,
            "<text x=\"12\" y=\"44\" fill=\"#444\">{}</text>",
            xml(&format!(
                "{} · {} CPUs · load at start {} · {} · {}",
                self.machine.cpu,
                self.machine.cpus,
                self.machine.loadavg,
                self.placement(),
                self.date
            ))
        );
        let _ = writeln!(
            o,
            "<text x=\"12\" y=\"60\" fill=\"#444\">{}</text>",
            xml(&format!(
                "bars: medians of {} rounds; whiskers: min–max (arrow: beyond the plot); ratios to TCP",
                self.options.rounds
            ))
        );
        for (pi, metric) in Metric::ALL.iter().enumerate() {
            let y0 = top + pi as f64 * (panel_h + PANEL_GAP);
            let _ = writeln!(
                o,
                "<text x=\"12\" y=\"{:.1}\" font-weight=\"bold\">{}</text>",
                y0 + 18.0,
                xml(&format!(
                    "{} — {} ({} is better)",
                    metric.label(),
                    metric.unit().replace("us", "µs"),
                    if metric.higher_is_better() {
                        "higher"
                    } else {
                        "lower"
                    }
                ))
            );
            // Scale to the medians: one wild round must not squash every bar; whiskers
            // beyond the plot end in an arrow.
            let max = Transport::ALL
                .iter()
                .map(|&t| self.summary(*metric, t).median)
                .fold(0.0f64, f64::max)
                .max(1e-12)
                * 1.4;
            let plot_w = W - LABEL_W - 250.0;
            let scale = plot_w / max;
            let x0 = LABEL_W;
            let _ = writeln!(
                o,
                "<line x1=\"{x0}\" y1=\"{:.1}\" x2=\"{x0}\" y2=\"{:.1}\" stroke=\"#333\"/>",
                y0 + PANEL_HEAD - 4.0,
                y0 + panel_h
            );
            for (ti, &t) in Transport::ALL.iter().enumerate() {
                if self.series(*metric, t).samples.is_empty() {
                    continue;
                }
                let s = self.summary(*metric, t);
                let y = y0 + PANEL_HEAD + ti as f64 * (BAR_H + GAP);
                let wbar = (s.median * scale).max(1.0);
                let _ = writeln!(
                    o,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                    x0 - 8.0,
                    y + BAR_H * 0.72,
                    xml(t.label())
                );
                let _ = writeln!(
                    o,
                    "<rect x=\"{x0}\" y=\"{y:.1}\" width=\"{wbar:.1}\" height=\"{BAR_H}\" fill=\"{}\"/>",
                    COLORS[ti]
                );
                let clip = |v: f64| x0 + (v * scale).min(plot_w);
                let (xa, xb) = (clip(s.min), clip(s.max));
                let ym = y + BAR_H / 2.0;
                let _ = writeln!(
                    o,
                    "<path d=\"M{xa:.1} {ym:.1}H{xb:.1}M{xa:.1} {:.1}V{:.1}M{xb:.1} {:.1}V{:.1}\" stroke=\"black\" stroke-width=\"1.2\" fill=\"none\"/>",
                    ym - 5.0,
                    ym + 5.0,
                    ym - 5.0,
                    ym + 5.0
                );
                if s.max * scale > plot_w {
                    let _ = writeln!(
                        o,
                        "<path d=\"M{:.1} {:.1}L{:.1} {ym:.1}L{:.1} {:.1}\" fill=\"black\"/>",
                        xb - 6.0,
                        ym - 4.0,
                        xb + 2.0,
                        xb - 6.0,
                        ym + 4.0
                    );
                }
                let unit = match metric {
                    Metric::MsgRate => "rt/s",
                    Metric::Bandwidth => "MB/s",
                    Metric::Latency | Metric::LatencyBusy => "µs",
                };
                let mut label = format!("{} {unit}", fmt_value(*metric, s.median));
                if t != Transport::Tcp {
                    let _ = write!(
                        label,
                        "  ({}× TCP)",
                        fmt_ratio(self.ratio_to_tcp(*metric, t))
                    );
                }
                let _ = writeln!(
                    o,
                    "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                    xb.max(x0 + wbar) + 8.0,
                    y + BAR_H * 0.72,
                    xml(&label)
                );
            }
        }
        o.push_str("</svg>\n");
        o
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
