//! Publication figures, drawn headless with plotters (PNG and SVG) and an embedded DejaVu
//! font. Each figure is computed from real solves, configured by a TOML file in
//! `experiments/` (compiled in, so `mlab-nc figures` works from any directory).

pub mod bce;
pub mod collapse;
pub mod convergence;
pub mod dimension;
pub mod landscape;
pub mod lowdim;
pub mod phase;
pub mod scale;
pub mod skew;
#[cfg(feature = "train")]
pub mod training;

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Font family registered at start-up (DejaVu Sans from the `dejavu` crate).
pub const FONT: &str = "sans-serif";

/// Tableau-10 colours.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

static FONTS: Once = Once::new();

/// Registers the embedded font once (no system fonts are used).
pub fn register_fonts() {
    FONTS.call_once(|| {
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

/// Maps any plotting error to ours.
pub fn pe<E: std::fmt::Debug>(e: E) -> Error {
    Error::new(format!("plotting failed: {e:?}"))
}

/// Draws the legend of `ch` in the house style: labels at `size` points in a white box at 85%
/// opacity with a black border, at `pos`.
pub fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(ch: &mut ChartContext<'a, DB, CT>, pos: SeriesLabelPosition, size: u32) -> Result<()> {
    ch.configure_series_labels().position(pos).label_font((FONT, size)).background_style(WHITE.mix(0.85)).border_style(BLACK).draw().map_err(pe)
}

/// A figure that can draw itself on any backend.
pub trait Figure {
    /// File stem, e.g. "fig1_collapse".
    fn name(&self) -> &'static str;
    /// Pixel size.
    fn size(&self) -> (u32, u32) {
        (1200, 800)
    }
    /// Draws on a drawing area.
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// Writes `fig` as `<out>/<name>.png` and `.svg`.
pub fn save<F: Figure>(out: &Path, fig: &F) -> Result<Vec<PathBuf>> {
    register_fonts();
    let png = out.join(format!("{}.png", fig.name()));
    let svg = out.join(format!("{}.svg", fig.name()));
    {
        let area = BitMapBackend::new(&png, fig.size()).into_drawing_area();
        area.fill(&WHITE).map_err(pe)?;
        fig.draw(&area)?;
        area.present().map_err(pe)?;
    }
    {
        let area = SVGBackend::new(&svg, fig.size()).into_drawing_area();
        area.fill(&WHITE).map_err(pe)?;
        fig.draw(&area)?;
        area.present().map_err(pe)?;
    }
    Ok(vec![png, svg])
}

/// A validated configuration with one weight decay for W, H and b.
pub fn config(k: usize, m: usize, d: usize, per_set: Vec<usize>, lambda: f64, loss: crate::model::loss::Loss) -> Result<crate::model::config::ValidConfig> {
    crate::model::config::UfmConfig { classes: k, max_labels: m, dim: d, per_set, lambda_w: lambda, lambda_h: lambda, lambda_b: lambda, loss }.validate()
}

/// Parses an experiment file.
pub fn experiment<T: DeserializeOwned>(name: &str, text: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| Error::new(format!("experiments/{name}: {}", crate::io::toml_message(text, &e))))
}

/// Log10 axis bounds covering `v` (positive values only), padded by half a decade.
pub fn log_range(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = v.filter(|x| *x > 0.0 && x.is_finite()).fold((f64::INFINITY, 0.0f64), |(a, b), x| (a.min(x), b.max(x)));
    if !lo.is_finite() {
        return (1e-16, 1.0);
    }
    (lo / 3.0, hi * 3.0)
}

/// Every other power of ten in `[lo, hi]`, as log-axis labels (plotters' own stop near 1e-15).
pub fn decades(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().ceil() as i32, hi.log10().floor() as i32);
    (a..=b).filter(|e| e % 2 == 0).map(|e| 10f64.powi(e)).collect()
}

/// Computes one figure and writes its files into the folder given.
type Renderer = Box<dyn Fn(&Path) -> Result<Vec<PathBuf>>>;

/// Renders every figure into `out`; returns the files written.
pub fn render_all(out: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).map_err(|e| Error::new(format!("{}: cannot create: {e}", out.display())))?;
    let mut files = Vec::new();
    let steps: Vec<(&str, Renderer)> = vec![
        ("fig1_collapse", Box::new(|o| save(o, &collapse::compute()?))),
        ("fig2_convergence", Box::new(|o| save(o, &convergence::compute()?))),
        ("fig3_scale", Box::new(|o| save(o, &scale::compute()?))),
        ("fig4_phase", Box::new(|o| save(o, &phase::compute()?))),
        ("fig5_dimension", Box::new(|o| save(o, &dimension::compute()?))),
        ("fig6_landscape", Box::new(|o| save(o, &landscape::compute()?))),
        ("fig7_skew", Box::new(|o| save(o, &skew::compute()?))),
        ("fig8_bce", Box::new(|o| save(o, &bce::compute()?))),
        ("fig9_lowdim", Box::new(|o| save(o, &lowdim::compute()?))),
        #[cfg(feature = "train")]
        (
            "fig10-12_train",
            Box::new(|o| {
                let (a, b, c) = training::compute()?;
                Ok([save(o, &a)?, save(o, &b)?, save(o, &c)?].concat())
            }),
        ),
    ];
    for (name, step) in steps {
        let t = std::time::Instant::now();
        files.extend(step(out)?);
        eprintln!("{name}: {:.1} s", t.elapsed().as_secs_f64());
    }
    Ok(files)
}
