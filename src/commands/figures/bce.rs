//! Figure 8: PAL against one-vs-all BCE, each at its certified optimum of the same
//! configuration: label-set means on their top-2 singular directions. Lines from the origin:
//! solid to class means, dashed to multi-label means; crosses mark the direction of the sum
//! of each set's tag means (at the norm of its mean): they coincide with the mean under PAL
//! (tag-wise average) and not under BCE.

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Deserialize;

use super::{experiment, legend, pe, Figure, FONT, PALETTE};
use crate::analysis::assess::assess;
use crate::analysis::metrics::set_means;
use crate::commands::verify::VerifyOptions;
use crate::error::Result;
use crate::model::loss::Loss;

#[derive(Deserialize)]
struct Exp {
    classes: usize,
    max_labels: usize,
    per_set: usize,
    lambda: f64,
}

/// One panel: projected means and crosses.
pub struct LossPanel {
    title: String,
    means: Vec<(f64, f64)>,
    crosses: Vec<(f64, f64)>,
    sets: Vec<Vec<usize>>,
}

/// Both panels.
pub struct Bce {
    panels: Vec<LossPanel>,
    title: String,
}

/// Solves both losses and projects the means.
pub fn compute() -> Result<Bce> {
    let e: Exp = experiment("fig8_bce.toml", include_str!("../../../experiments/fig8_bce.toml"))?;
    let mut panels = Vec::new();
    for loss in [Loss::Pal, Loss::Bce] {
        let cfg = super::config(e.classes, e.max_labels, e.classes, vec![e.per_set], e.lambda, loss)?;
        let obj = crate::model::objective::UfmObjective::new(&cfg);
        let opts = VerifyOptions::default();
        let sol = obj.solve(0, &opts.solve, None)?;
        let x = sol.x.clone();
        let run = assess(&cfg, &obj, &crate::theory::prediction::predict(&cfg), 0, &sol, &opts.tol);
        let mu = set_means(obj.split(&x).h.into(), &cfg.labels);
        // Singular values come sorted, largest first.
        let u = crate::linalg::jacobi::svd(&mu).ok_or_else(|| crate::error::Error::new("figure 8: label-set means are not finite"))?.u;
        let (u1, u2) = (u.column(0).into_owned(), u.column(1).into_owned());
        let pr = |v: nalgebra::DVector<f64>| (v.dot(&u1), v.dot(&u2));
        let means: Vec<(f64, f64)> = mu.column_iter().map(|c| pr(c.into_owned())).collect();
        let sets = cfg.labels.sets.clone();
        let crosses = sets
            .iter()
            .enumerate()
            .filter(|(_, s)| s.len() >= 2)
            .map(|(j, s)| {
                let sum: nalgebra::DVector<f64> =
                    s.iter().map(|&c| mu.column(cfg.labels.singleton(c).unwrap_or(c)).into_owned()).fold(nalgebra::DVector::zeros(mu.nrows()), |a, b| a + b);
                pr(sum.normalize() * mu.column(j).norm())
            })
            .collect();
        let angle = run.metrics.tag.first().and_then(|t| t.max_angle_deg).unwrap_or(f64::NAN);
        let res = run.synthesis.iter().map(|s| s.residual).fold(0.0, f64::max);
        panels.push(LossPanel {
            title: format!(
                "{}: NC2-W {:.1e}, NC2-H {:.1e}, tag angle {:.2}°, off-span {:.1e}, cert. gap {:.0e}",
                if loss == Loss::Pal { "PAL" } else { "BCE" },
                run.metrics.nc2_w.unwrap_or(f64::NAN),
                run.metrics.nc2_h.unwrap_or(f64::NAN),
                angle,
                res,
                run.certificate.relative_gap.unwrap_or(f64::NAN)
            ),
            means,
            crosses,
            sets,
        });
    }
    Ok(Bce { panels, title: format!("PAL vs one-vs-all BCE at their certified optima (K = {}, M = {}, {} per set)", e.classes, e.max_labels, e.per_set) })
}

impl Figure for Bce {
    fn name(&self) -> &'static str {
        "fig8_bce"
    }
    fn size(&self) -> (u32, u32) {
        (1400, 720)
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let area = area.titled(&self.title, (FONT, 22)).map_err(pe)?;
        let cells = area.split_evenly((1, 2));
        for (cell, p) in cells.iter().zip(&self.panels) {
            let lim = p.means.iter().chain(&p.crosses).map(|q| q.0.abs().max(q.1.abs())).fold(1e-12, f64::max) * 1.25;
            let (w, h) = cell.dim_in_pixel();
            let half_w = lim * (w as f64 - 80.0) / (h as f64 - 90.0);
            let mut ch = ChartBuilder::on(cell)
                .caption(&p.title, (FONT, 14))
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(45)
                .build_cartesian_2d(-half_w..half_w, -lim..lim)
                .map_err(pe)?;
            ch.configure_mesh().x_desc("singular direction 1").y_desc("singular direction 2").label_style((FONT, 12)).draw().map_err(pe)?;
            for (j, s) in p.sets.iter().enumerate() {
                let line = vec![(0.0, 0.0), p.means[j]];
                if s.len() == 1 {
                    ch.draw_series(LineSeries::new(line, PALETTE[s[0]].stroke_width(2))).map_err(pe)?;
                    ch.draw_series(std::iter::once(Circle::new(p.means[j], 7, PALETTE[s[0]].filled()))).map_err(pe)?;
                } else {
                    ch.draw_series(DashedLineSeries::new(line, 8, 5, BLACK.mix(0.7).stroke_width(2))).map_err(pe)?;
                    ch.draw_series(std::iter::once(Circle::new(p.means[j], 7, BLACK.filled()))).map_err(pe)?;
                }
            }
            ch.draw_series(p.crosses.iter().map(|q| Cross::new(*q, 9, PALETTE[3].stroke_width(2))))
                .map_err(pe)?
                .label("direction of the sum of the set's tag means")
                .legend(|(x, y)| Cross::new((x + 9, y), 6, PALETTE[3].stroke_width(2)));
            ch.draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
                .map_err(pe)?
                .label("class means (solid), multi-label means (black, dashed)")
                .legend(|(x, y)| Circle::new((x + 9, y), 5, BLACK.filled()));
            legend(&mut ch, SeriesLabelPosition::LowerRight, 12)?;
        }
        Ok(())
    }
}
