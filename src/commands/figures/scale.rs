//! Figure 3: the tag-wise scale s_m against lambda (lambda_w = lambda_h = lambda_b): the
//! predicted curves s_m(lambda) for m = 2, 3 from small lambda up to the trivial threshold
//! lambda_c, and measured dots (mean ||mu_S|| / ||(1/m) sum mu_k||) from solves.

use plotters::coord::Shift;
use plotters::prelude::*;
use rayon::prelude::*;
use serde::Deserialize;

use super::{experiment, legend, pe, Figure, FONT, PALETTE};
use crate::commands::verify::{verify, VerifyOptions};
use crate::error::Result;
use crate::model::config::ValidConfig;
use crate::model::loss::Loss;
use crate::theory::prediction::predict;

#[derive(Deserialize)]
struct Exp {
    classes: usize,
    max_labels: usize,
    per_set: usize,
    lambda_min: f64,
    solves: usize,
}

/// Curves and dots.
pub struct Scale {
    curves: Vec<(usize, Vec<(f64, f64)>)>,
    dots: Vec<(usize, f64, f64)>,
    lambda_c: f64,
    title: String,
}

fn cfg(e: &Exp, lam: f64) -> Result<ValidConfig> {
    super::config(e.classes, e.max_labels, e.classes, vec![e.per_set], lam, Loss::Pal)
}

/// Predicts along a fine lambda grid and solves at a coarse one.
pub fn compute() -> Result<Scale> {
    let e: Exp = experiment("fig3_scale.toml", include_str!("../../../experiments/fig3_scale.toml"))?;
    // The statistic scales as 1/(lw lh), so lambda_c = sqrt(statistic at lambda = 1).
    let lambda_c = predict(&cfg(&e, 1.0)?).trivial_statistic.sqrt();
    let grid = |n: usize, hi: f64| -> Vec<f64> { (0..n).map(|i| e.lambda_min * (hi / e.lambda_min).powf(i as f64 / (n - 1) as f64)).collect() };
    let mut curves = Vec::new();
    for m in 2..=e.max_labels {
        let pts = grid(300, lambda_c * 0.9999).into_iter().filter_map(|l| Some((l, predict(&cfg(&e, l).ok()?).scale[m - 1]?))).collect();
        curves.push((m, pts));
    }
    let lams = grid(e.solves, lambda_c * 0.85);
    let dots: Vec<Vec<(usize, f64, f64)>> = lams
        .par_iter()
        .map(|&l| -> Result<Vec<(usize, f64, f64)>> {
            let r = verify(&cfg(&e, l)?, &[0], &VerifyOptions::default())?;
            Ok(r.runs[0].metrics.tag.iter().filter_map(|t| Some((t.multiplicity, l, t.scale_mean?))).collect())
        })
        .collect::<Result<_>>()?;
    Ok(Scale {
        curves,
        dots: dots.into_iter().flatten().collect(),
        lambda_c,
        title: format!("Tag-wise scale s_m vs weight decay (K = {}, M = {}, {} per set)", e.classes, e.max_labels, e.per_set),
    })
}

impl Figure for Scale {
    fn name(&self) -> &'static str {
        "fig3_scale"
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let xmin = self.curves.iter().flat_map(|c| c.1.first().map(|p| p.0)).fold(f64::INFINITY, f64::min);
        let ymax = self.curves.iter().flat_map(|c| c.1.iter().map(|p| p.1)).chain(self.dots.iter().map(|d| d.2)).fold(0.0, f64::max) * 1.1;
        let mut ch = ChartBuilder::on(area)
            .caption(&self.title, (FONT, 22))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d((xmin * 0.8..self.lambda_c * 1.5).log_scale(), 0.0..ymax)
            .map_err(pe)?;
        ch.configure_mesh()
            .x_desc("λ = λ_W = λ_H = λ_b (log scale)")
            .y_desc("scale s_m = ||h_S|| / ||mean of its tags' h_k||")
            .y_label_formatter(&|v| format!("{v:.1}"))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .x_label_formatter(&|v| format!("{v:.0e}"))
            .draw()
            .map_err(pe)?;
        for (i, (m, pts)) in self.curves.iter().enumerate() {
            let col = PALETTE[i];
            ch.draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
                .map_err(pe)?
                .label(format!("theory s_{m}(λ)"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
            let m = *m;
            ch.draw_series(self.dots.iter().filter(|d| d.0 == m).map(|d| Circle::new((d.1, d.2), 6, col.filled())))
                .map_err(pe)?
                .label(format!("solved, m = {m}"))
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, col.filled()));
        }
        ch.draw_series(DashedLineSeries::new(vec![(self.lambda_c, 0.0), (self.lambda_c, ymax)], 6, 4, BLACK.stroke_width(1)))
            .map_err(pe)?
            .label(format!("trivial threshold λ_c = {:.4}", self.lambda_c))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        legend(&mut ch, SeriesLabelPosition::LowerLeft, 14)?;
        Ok(())
    }
}
