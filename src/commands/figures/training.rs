//! Figures 10 to 12, from recorded `mlab-nc train` runs kept in `experiments/` (compiled in,
//! so that `figures` stays fast): the NC metrics against the epoch on multi-label
//! Fashion-MNIST, the measured tag-wise scale against the UFM's prediction, and a learned
//! against a fixed simplex-ETF classifier.

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use serde_json::Value;

use super::{decades, legend, log_range, pe, Figure, FONT, PALETTE};
use crate::error::{Error, Result};

/// The learned-classifier run (the README's reproduction command).
pub const LEARNED: &str = include_str!("../../../experiments/train_k10_pal.jsonl");
/// The same network with a fixed simplex-ETF classifier and d = K.
pub const ETF: &str = include_str!("../../../experiments/train_k10_etf.jsonl");

/// The records of a run file.
pub fn records(name: &str, text: &str) -> Result<Vec<Value>> {
    let r: Vec<Value> = text
        .lines()
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| Error::new(format!("experiments/{name}: line {}: {e}", i + 1))))
        .collect::<Result<_>>()?;
    if r.is_empty() {
        return Err(Error::new(format!("experiments/{name}: no records")));
    }
    Ok(r)
}

/// The `mlab-nc train` command that recorded a run, from its options.
pub fn command(r: &Value) -> String {
    let o = &r["options"];
    let list = |v: &Value| v.as_array().map(|a| a.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")).unwrap_or_default();
    let s = |k: &str| o[k].as_str().map(str::to_string).unwrap_or_else(|| o[k].to_string());
    format!(
        "mlab-nc train -K {} --per-set {} --test-per-set {} --model {} --width {} --depth {} --dim {} --classifier {} --loss {} --epochs {} --batch {} --lr {} --momentum {} --weight-decay {} --feature-decay {} --eval-every {} --seed {}",
        s("classes"),
        list(&o["per_set"]),
        list(&o["test_per_set"]),
        s("model"),
        s("width"),
        s("depth"),
        s("dim"),
        s("classifier"),
        s("loss"),
        s("epochs"),
        s("batch"),
        s("lr"),
        s("momentum"),
        s("weight_decay"),
        s("feature_decay"),
        s("eval_every"),
        s("seed")
    )
}

fn series(r: &[Value], f: impl Fn(&Value) -> Option<f64>) -> Vec<(f64, f64)> {
    r.iter().filter_map(|x| Some((x["epoch"].as_f64()?, f(x)?))).filter(|p| p.1.is_finite()).collect()
}

fn xmax(r: &[Value]) -> f64 {
    r.iter().filter_map(|x| x["epoch"].as_f64()).fold(1.0, f64::max)
}

type Series = (String, Vec<(f64, f64)>, RGBColor, bool);

fn log_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, title: &str, xm: f64, lines: &[Series], ydesc: &str) -> Result<()> {
    let (lo, hi) = log_range(lines.iter().flat_map(|s| s.1.iter().map(|p| p.1)));
    let mut ch = ChartBuilder::on(area)
        .caption(title, (FONT, 17))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(70)
        .build_cartesian_2d(
            0.0..xm,
            (lo..hi).log_scale().with_key_points(decades(lo / 10.0, hi * 10.0).into_iter().chain([lo.max(1e-300)]).collect::<Vec<_>>()),
        )
        .map_err(pe)?;
    ch.configure_mesh()
        .x_desc("epoch")
        .y_desc(ydesc)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(pe)?;
    for (name, pts, col, dashed) in lines {
        let col = *col;
        let style = col.stroke_width(2);
        if *dashed {
            ch.draw_series(DashedLineSeries::new(pts.clone(), 8, 5, style))
                .map_err(pe)?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
        } else {
            ch.draw_series(LineSeries::new(pts.clone(), style))
                .map_err(pe)?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
        }
    }
    legend(&mut ch, SeriesLabelPosition::UpperRight, 13)?;
    Ok(())
}

/// Splits lines longer than `width` characters at the flag nearest their middle.
fn wrap(lines: &[String], width: usize) -> Vec<String> {
    let mut out = Vec::new();
    for l in lines {
        if l.len() <= width {
            out.push(l.clone());
            continue;
        }
        let mid = l.len() / 2;
        let cut = l.match_indices(" --").map(|(i, _)| i).min_by_key(|&i| i.abs_diff(mid)).unwrap_or(mid);
        out.push(l[..cut].to_string());
        out.push(format!("    {}", l[cut..].trim_start()));
    }
    out
}

fn caption<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, lines: &[String]) -> Result<()> {
    let (w, _) = area.dim_in_pixel();
    let lines = wrap(lines, (w as usize / 7).max(60));
    for (i, l) in lines.iter().enumerate() {
        area.draw(&Text::new(l.clone(), (12, 6 + 18 * i as i32), (FONT, 13))).map_err(pe)?;
    }
    Ok(())
}

/// Figure 10: NC1, NC2-W, NC2-H, NC3 and the tag-wise angle against the epoch.
pub struct TrainCollapse {
    runs: Vec<Value>,
}

/// Figure 11: the measured tag-wise scale against the epoch, the UFM's prediction dashed.
pub struct TrainScale {
    runs: Vec<Value>,
}

/// Figure 12: learned against fixed-ETF classifier.
pub struct TrainEtf {
    learned: Vec<Value>,
    etf: Vec<Value>,
}

/// Reads the recorded runs.
pub fn compute() -> Result<(TrainCollapse, TrainScale, TrainEtf)> {
    let learned = records("train_k10_pal.jsonl", LEARNED)?;
    let etf = records("train_k10_etf.jsonl", ETF)?;
    Ok((TrainCollapse { runs: learned.clone() }, TrainScale { runs: learned.clone() }, TrainEtf { learned, etf }))
}

fn nc_lines(r: &[Value], suffix: &str, shade: f64) -> Vec<Series> {
    let m = |k: &'static str| move |x: &Value| x["metrics"][k].as_f64();
    let mix = |c: RGBColor| {
        RGBColor(
            (c.0 as f64 * shade + 255.0 * (1.0 - shade)) as u8,
            (c.1 as f64 * shade + 255.0 * (1.0 - shade)) as u8,
            (c.2 as f64 * shade + 255.0 * (1.0 - shade)) as u8,
        )
    };
    vec![
        (format!("NC1{suffix}"), series(r, m("nc1")), mix(PALETTE[0]), false),
        (format!("NC2-W{suffix}"), series(r, m("nc2_w")), mix(PALETTE[1]), false),
        (format!("NC2-H{suffix}"), series(r, m("nc2_h")), mix(PALETTE[2]), false),
        (format!("NC3{suffix}"), series(r, m("nc3")), mix(PALETTE[3]), false),
    ]
}

impl Figure for TrainCollapse {
    fn name(&self) -> &'static str {
        "fig10_train_collapse"
    }
    fn size(&self) -> (u32, u32) {
        (1400, 700)
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let (top, body) = area.split_vertically(62);
        let last = &self.runs[self.runs.len() - 1];
        caption(&top, &["Multi-label Fashion-MNIST (K = 10, M = 2), MLP with a linear feature layer, PAL loss. Recorded by:".into(), command(last)])?;
        let (l, r) = body.split_horizontally(760);
        log_panel(&l, "NC metrics of the training features", xmax(&self.runs), &nc_lines(&self.runs, "", 1.0), "value (log scale)")?;
        let angle = vec![
            ("mean tag-wise angle, m = 2 (deg)".to_string(), series(&self.runs, |x| x["metrics"]["tag"][0]["mean_angle_deg"].as_f64()), PALETTE[4], false),
            ("largest tag-wise angle, m = 2 (deg)".to_string(), series(&self.runs, |x| x["metrics"]["tag"][0]["max_angle_deg"].as_f64()), PALETTE[5], false),
        ];
        log_panel(&r, "Angle between mu_S and the sum of its tags' means", xmax(&self.runs), &angle, "degrees (log scale)")
    }
}

impl Figure for TrainScale {
    fn name(&self) -> &'static str {
        "fig11_train_scale"
    }
    fn size(&self) -> (u32, u32) {
        (1200, 700)
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let (top, body) = area.split_vertically(62);
        let last = &self.runs[self.runs.len() - 1];
        caption(
            &top,
            &[
                "Measured tag-wise scale s_2 = ||mu_S|| / ||mean of its tags' means|| against the UFM (lambda_w = wd, lambda_h = fd/N). Recorded by:".into(),
                command(last),
            ],
        )?;
        let tag = |k: &'static str| move |x: &Value| x["metrics"]["tag"][0][k].as_f64();
        let (mean, lo, hi) = (series(&self.runs, tag("scale_mean")), series(&self.runs, tag("scale_min")), series(&self.runs, tag("scale_max")));
        let pred = last["ufm"]["scale"][1].as_f64().unwrap_or(f64::NAN);
        let ymax = hi.iter().map(|p| p.1).fold(pred, f64::max) * 1.05;
        let ymin = lo.iter().map(|p| p.1).fold(1.0, f64::min).min(1.0) * 0.95;
        let xm = xmax(&self.runs);
        let mut ch = ChartBuilder::on(&body).margin(12).x_label_area_size(42).y_label_area_size(60).build_cartesian_2d(0.0..xm, ymin..ymax).map_err(pe)?;
        ch.configure_mesh()
            .x_desc("epoch")
            .y_desc("s_2")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 15))
            .draw()
            .map_err(pe)?;
        let band: Vec<(f64, f64)> = hi.iter().copied().chain(lo.iter().rev().copied()).collect();
        ch.draw_series(std::iter::once(Polygon::new(band, PALETTE[0].mix(0.18))))
            .map_err(pe)?
            .label("min..max over the 45 pairs")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], PALETTE[0].mix(0.3).filled()));
        ch.draw_series(LineSeries::new(mean, PALETTE[0].stroke_width(2)))
            .map_err(pe)?
            .label("measured s_2 (mean over pairs)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], PALETTE[0].stroke_width(2)));
        ch.draw_series(DashedLineSeries::new(vec![(0.0, pred), (xm, pred)], 8, 5, PALETTE[3].stroke_width(2)))
            .map_err(pe)?
            .label(format!("UFM prediction s_2 = {pred:.4}"))
            .legend(|(x, y)| DashedPathElement::new(vec![(x, y), (x + 20, y)], 8, 5, PALETTE[3].stroke_width(2)));
        // Short dashes in black: at s = 2 the line lies on a major grid line, which a thin grey
        // solid line would be lost in.
        ch.draw_series(DashedLineSeries::new(vec![(0.0, 2.0), (xm, 2.0)], 3, 4, BLACK.stroke_width(2)))
            .map_err(pe)?
            .label("s = 2: plain sum of the tags")
            .legend(|(x, y)| DashedPathElement::new(vec![(x, y), (x + 20, y)], 3, 4, BLACK.stroke_width(2)));
        legend(&mut ch, SeriesLabelPosition::LowerRight, 14)?;
        Ok(())
    }
}

impl Figure for TrainEtf {
    fn name(&self) -> &'static str {
        "fig12_train_etf"
    }
    fn size(&self) -> (u32, u32) {
        (1400, 720)
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let (top, body) = area.split_vertically(98);
        let (a, b) = (&self.learned[self.learned.len() - 1], &self.etf[self.etf.len() - 1]);
        caption(&top, &["Learned classifier (solid) against a fixed simplex-ETF classifier with d = K (faded). Recorded by:".into(), command(a), command(b)])?;
        let (l, r) = body.split_horizontally(640);
        let xm = xmax(&self.learned).max(xmax(&self.etf));
        let mut ch = ChartBuilder::on(&l)
            .caption("Exact-set accuracy", (FONT, 17))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..xm, 0.0..100.0)
            .map_err(pe)?;
        ch.configure_mesh()
            .x_desc("epoch")
            .y_desc("%")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 15))
            .draw()
            .map_err(pe)?;
        let acc = |r: &[Value], k: &'static str| series(r, move |x| x[k]["exact"].as_f64().map(|v| 100.0 * v));
        for (name, pts, col) in [
            ("train, learned", acc(&self.learned, "train"), PALETTE[0].to_rgba()),
            ("test, learned", acc(&self.learned, "test"), PALETTE[1].to_rgba()),
            ("train, ETF", acc(&self.etf, "train"), PALETTE[0].mix(0.45)),
            ("test, ETF", acc(&self.etf, "test"), PALETTE[1].mix(0.45)),
        ] {
            ch.draw_series(LineSeries::new(pts, col.stroke_width(2)))
                .map_err(pe)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
        }
        legend(&mut ch, SeriesLabelPosition::LowerRight, 13)?;
        let mut lines = nc_lines(&self.learned, ", learned", 1.0);
        // The fixed ETF's NC2-W is rounding (about 1e-16) and would flatten the panel: said in
        // the legend instead of drawn.
        let etf_w = b["metrics"]["nc2_w"].as_f64().unwrap_or(f64::NAN);
        lines.extend(nc_lines(&self.etf, ", ETF", 0.4).into_iter().filter(|l| !l.0.starts_with("NC2-W")));
        lines.push((
            format!("NC2-W, ETF: {etf_w:.0e} throughout (fixed)"),
            Vec::new(),
            {
                let (r, g, b) = PALETTE[1].mix(0.4).rgb();
                let f = |c: u8| (c as f64 * 0.4 + 255.0 * 0.6) as u8;
                RGBColor(f(r), f(g), f(b))
            },
            false,
        ));
        log_panel(&r, "NC metrics", xm, &lines, "value (log scale)")
    }
}
