//! Figure 2: every metric against the L-BFGS iteration on a log scale: relative objective gap
//! to the prediction, gradient norm, NC1, NC2-W, NC2-H, NC3, the largest tag-wise angle, the
//! worst relative scale error, and the certified (duality) gap.

use std::sync::{Arc, Mutex};

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Deserialize;

use super::{decades, experiment, legend, log_range, pe, Figure, FONT, PALETTE};
use crate::analysis::metrics::Metrics;
use crate::error::Result;
use crate::model::loss::Loss;
use crate::model::objective::UfmObjective;
use crate::solver::SolveParams;
use crate::theory::certificate::certify;
use crate::theory::prediction::predict;

#[derive(Deserialize)]
struct Exp {
    classes: usize,
    max_labels: usize,
    per_set: Vec<usize>,
    lambda: f64,
    seed: u64,
}

/// Series of (iteration, value).
pub struct Convergence {
    series: Vec<(&'static str, Vec<(f64, f64)>)>,
    title: String,
}

/// Solves once, measuring every metric at every iterate.
pub fn compute() -> Result<Convergence> {
    let e: Exp = experiment("fig2_convergence.toml", include_str!("../../../experiments/fig2_convergence.toml"))?;
    let cfg = super::config(e.classes, e.max_labels, e.classes, e.per_set.clone(), e.lambda, Loss::Pal)?;
    let pred = predict(&cfg);
    let obj = UfmObjective::new(&cfg);
    let rows: Arc<Mutex<Vec<[f64; 10]>>> = Arc::new(Mutex::new(Vec::new()));
    let (r2, obj2, labels, pred2) = (rows.clone(), obj.clone(), cfg.labels.clone(), pred.clone());
    let cb = Box::new(move |it: u64, x: &[f64], f: f64, g: f64| {
        let p = obj2.split(x);
        let m = Metrics::compute(p.h, &labels, Some(p.w), Some(p.b));
        let angle = m.tag.iter().filter_map(|t| t.max_angle_deg).fold(0.0, f64::max);
        let scale = m
            .tag
            .iter()
            .filter_map(|t| Some((t.scale_mean? - pred2.scale.get(t.multiplicity - 1).copied().flatten()?).abs() / pred2.scale[t.multiplicity - 1]?))
            .fold(0.0, f64::max);
        let cert = certify(&obj2, x, f).relative_gap.unwrap_or(f64::NAN);
        let gap = (f - pred2.objective) / pred2.objective;
        let row = [
            it as f64,
            gap,
            g,
            m.nc1.unwrap_or(f64::NAN),
            m.nc2_w.unwrap_or(f64::NAN),
            m.nc2_h.unwrap_or(f64::NAN),
            m.nc3.unwrap_or(f64::NAN),
            angle,
            scale,
            cert,
        ];
        if let Ok(mut v) = r2.lock() {
            v.push(row);
        }
    });
    obj.solve(e.seed, &SolveParams::default(), Some(cb))?;
    let rows = rows.lock().map(|v| v.clone()).unwrap_or_default();
    let names = [
        "objective gap (f - f*)/f*",
        "gradient norm",
        "NC1",
        "NC2-W",
        "NC2-H",
        "NC3",
        "max tag-wise angle (deg)",
        "scale error |s - s_m|/s_m",
        "certified gap (f - D)/f",
    ];
    let series =
        names.iter().enumerate().map(|(i, n)| (*n, rows.iter().map(|r| (r[0], r[i + 1])).filter(|p| p.1 > 0.0 && p.1.is_finite()).collect())).collect();
    Ok(Convergence {
        series,
        title: format!(
            "Convergence of L-BFGS to M-lab neural collapse (K = {}, M = {}, per set {:?}, lambda = {:e})",
            e.classes, e.max_labels, e.per_set, e.lambda
        ),
    })
}

impl Figure for Convergence {
    fn name(&self) -> &'static str {
        "fig2_convergence"
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let xmax = self.series.iter().flat_map(|s| s.1.iter().map(|p| p.0)).fold(1.0, f64::max);
        let (lo, hi) = log_range(self.series.iter().flat_map(|s| s.1.iter().map(|p| p.1)));
        let mut ch = ChartBuilder::on(area)
            .caption(&self.title, (FONT, 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..xmax, (lo..hi).log_scale().with_key_points(decades(lo, hi)))
            .map_err(pe)?;
        ch.configure_mesh()
            .x_desc("L-BFGS iteration")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("value (log scale)")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .draw()
            .map_err(pe)?;
        for (i, (name, pts)) in self.series.iter().enumerate() {
            let col = PALETTE[i % PALETTE.len()];
            ch.draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
                .map_err(pe)?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
        }
        legend(&mut ch, SeriesLabelPosition::UpperRight, 14)?;
        Ok(())
    }
}
