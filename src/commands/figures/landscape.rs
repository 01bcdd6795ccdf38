//! Figure 6: the landscape seen by L-BFGS: a histogram of log10 of the final relative gap to
//! the predicted optimum over many random starts (N(0, init_std^2)).

use plotters::coord::Shift;
use plotters::prelude::*;
use rayon::prelude::*;
use serde::Deserialize;

use super::{experiment, legend, pe, Figure, FONT, PALETTE};
use crate::error::Result;
use crate::model::loss::Loss;
use crate::model::objective::UfmObjective;
use crate::solver::SolveParams;
use crate::theory::prediction::predict;

#[derive(Deserialize)]
struct Exp {
    classes: usize,
    max_labels: usize,
    per_set: Vec<usize>,
    lambda: f64,
    starts: u64,
    init_std: f64,
}

/// Final gaps.
pub struct Landscape {
    log_gaps: Vec<f64>,
    title: String,
}

const FLOOR: f64 = 1e-17;

/// Solves from every start in parallel.
pub fn compute() -> Result<Landscape> {
    let e: Exp = experiment("fig6_landscape.toml", include_str!("../../../experiments/fig6_landscape.toml"))?;
    let cfg = super::config(e.classes, e.max_labels, e.classes, e.per_set.clone(), e.lambda, Loss::Pal)?;
    let pred = predict(&cfg);
    let obj = UfmObjective::new(&cfg);
    let params = SolveParams { init_std: e.init_std, ..SolveParams::default() };
    let gaps: Vec<f64> = (0..e.starts)
        .into_par_iter()
        .map(|s| obj.solve(s, &params, None).map(|r| ((r.objective - pred.objective) / pred.objective).abs().max(FLOOR).log10()))
        .collect::<Result<_>>()?;
    let hit = gaps.iter().filter(|g| **g <= -9.0).count();
    Ok(Landscape {
        title: format!(
            "Landscape: {hit} of {} random starts reach the predicted optimum to 1e-9 (K = {}, M = {}, N(0, {}²) starts)",
            e.starts, e.classes, e.max_labels, e.init_std
        ),
        log_gaps: gaps,
    })
}

impl Figure for Landscape {
    fn name(&self) -> &'static str {
        "fig6_landscape"
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let width = 0.5;
        let (lo, hi) = (-17.0, 0.0);
        let nb = ((hi - lo) / width) as usize;
        let mut counts = vec![0usize; nb];
        for g in &self.log_gaps {
            let b = (((g - lo) / width).floor().max(0.0) as usize).min(nb - 1);
            counts[b] += 1;
        }
        let cmax = *counts.iter().max().unwrap_or(&1) as f64;
        let mut ch = ChartBuilder::on(area)
            .caption(&self.title, (FONT, 20))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(lo..hi, 0.0..cmax * 1.15)
            .map_err(pe)?;
        ch.configure_mesh()
            .x_desc("log10 |f - f*| / f*  (final relative gap; -17 = exact to rounding)")
            .y_desc("number of starts")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .draw()
            .map_err(pe)?;
        let col = PALETTE[0];
        ch.draw_series(counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, c)| {
            let x0 = lo + i as f64 * width;
            Rectangle::new([(x0 + 0.03, 0.0), (x0 + width - 0.03, *c as f64)], col.filled())
        }))
        .map_err(pe)?
        .label(format!("{} starts, bins of {width} decade", self.log_gaps.len()))
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], col.filled()));
        ch.draw_series(DashedLineSeries::new(vec![(-9.0, 0.0), (-9.0, cmax * 1.15)], 6, 4, BLACK.stroke_width(1)))
            .map_err(pe)?
            .label("verification bar 1e-9")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        legend(&mut ch, SeriesLabelPosition::UpperRight, 14)?;
        Ok(())
    }
}
