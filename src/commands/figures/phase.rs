//! Figure 4: phase diagram over (lambda, samples per set n): the trivial regime (W = 0, H = 0
//! optimal) against the collapsed one. Line: the closed-form boundary, where
//! sum_m a_m^2 / q_m = 1, i.e. lambda_c(n) = lambda_c(1) / sqrt(n) when every multiplicity has
//! n samples per set. Markers: solved configurations, by verdict.

use plotters::coord::Shift;
use plotters::prelude::*;
use rayon::prelude::*;
use serde::Deserialize;

use super::{experiment, pe, Figure, FONT, PALETTE};
use crate::analysis::verdict::Verdict;
use crate::commands::verify::{verify, VerifyOptions};
use crate::error::Result;
use crate::model::loss::Loss;
use crate::theory::prediction::predict;

#[derive(Deserialize)]
struct Exp {
    classes: usize,
    max_labels: usize,
    per_set_max: usize,
    lambda_min: f64,
    lambda_max: f64,
    lambda_points: usize,
}

/// Boundary and solved points.
pub struct Phase {
    boundary: Vec<(f64, f64)>,
    points: Vec<(f64, f64, Verdict)>,
    range: (f64, f64, f64),
    title: String,
}

/// Solves the grid (in parallel) and computes the boundary.
pub fn compute() -> Result<Phase> {
    let e: Exp = experiment("fig4_phase.toml", include_str!("../../../experiments/fig4_phase.toml"))?;
    let mk = |lam: f64, n: usize| super::config(e.classes, e.max_labels, e.classes, vec![n], lam, Loss::Pal);
    let lc1 = predict(&mk(1.0, 1)?).trivial_statistic.sqrt();
    let boundary = (0..=200).map(|i| 1.0 + (e.per_set_max as f64 - 1.0) * i as f64 / 200.0).map(|n| (lc1 / n.sqrt(), n)).collect();
    let mut grid = Vec::new();
    for n in 1..=e.per_set_max {
        for i in 0..e.lambda_points {
            grid.push((e.lambda_min * (e.lambda_max / e.lambda_min).powf(i as f64 / (e.lambda_points - 1) as f64), n));
        }
    }
    let mut opts = VerifyOptions::default();
    opts.solve.max_iters = 3000;
    let points = grid
        .par_iter()
        .map(|&(lam, n)| -> Result<(f64, f64, Verdict)> { Ok((lam, n as f64, verify(&mk(lam, n)?, &[0], &opts)?.verdict)) })
        .collect::<Result<_>>()?;
    Ok(Phase {
        boundary,
        points,
        range: (e.lambda_min, e.lambda_max, e.per_set_max as f64),
        title: format!("Phase diagram: collapse vs trivial optimum (K = {}, M = {}, PAL)", e.classes, e.max_labels),
    })
}

impl Figure for Phase {
    fn name(&self) -> &'static str {
        "fig4_phase"
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let (lo, hi, nmax) = self.range;
        let mut ch = ChartBuilder::on(area)
            .caption(&self.title, (FONT, 22))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d((lo * 0.7..hi * 1.4).log_scale(), 0.5..nmax + 0.5)
            .map_err(pe)?;
        ch.configure_mesh()
            .x_desc("λ = λ_W = λ_H = λ_b (log scale)")
            .y_desc("samples per label set n")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .x_label_formatter(&|v| format!("{v:.0e}"))
            .draw()
            .map_err(pe)?;
        ch.draw_series(LineSeries::new(self.boundary.clone(), BLACK.stroke_width(2)))
            .map_err(pe)?
            .label("closed-form boundary Σ a_m²/q_m = 1")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
        let groups: [(Verdict, &str, RGBColor); 3] = [
            (Verdict::Verified, "solved: collapsed, verified", PALETTE[0]),
            (Verdict::Trivial, "solved: trivial (W = H = 0)", PALETTE[7]),
            (Verdict::NotConverged, "solved: not converged (near the boundary)", PALETTE[1]),
        ];
        for (v, label, col) in groups {
            ch.draw_series(self.points.iter().filter(|p| p.2 == v).map(|p| Circle::new((p.0, p.1), 7, col.filled())))
                .map_err(pe)?
                .label(label)
                .legend(move |(x, y)| Circle::new((x + 10, y), 6, col.filled()));
        }
        ch.draw_series(
            self.points
                .iter()
                .filter(|p| !matches!(p.2, Verdict::Verified | Verdict::Trivial | Verdict::NotConverged))
                .map(|p| Cross::new((p.0, p.1), 8, PALETTE[3].stroke_width(3))),
        )
        .map_err(pe)?
        .label("solved: violated")
        .legend(|(x, y)| Cross::new((x + 10, y), 6, PALETTE[3].stroke_width(3)));
        ch.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(pe)?;
        Ok(())
    }
}
