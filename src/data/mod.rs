//! Real images for `train`: an IDX reader ([`idx`]), the labelled image splits of an
//! MNIST-family directory ([`Images`]), and the multi-label samples built from them
//! ([`multilabel`]).

pub mod idx;
pub mod multilabel;

use std::path::{Path, PathBuf};

use crate::bail;
use crate::error::Result;

/// Where Debian's `dataset-fashion-mnist` package installs Fashion-MNIST.
pub const DEFAULT_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// How to get the default data, for error messages.
pub const INSTALL_HINT: &str =
    "install Fashion-MNIST with `sudo apt-get install dataset-fashion-mnist`, or pass --data DIR with the four IDX files (gzipped or not), MNIST included";

/// One split of an MNIST-family dataset: grey-scale images and their class labels.
#[derive(Debug, Clone)]
pub struct Images {
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
    /// `count x rows x cols` bytes, row-major.
    pub pixels: Vec<u8>,
    /// The class of each image.
    pub labels: Vec<u8>,
}

impl Images {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// No images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let s = self.rows * self.cols;
        &self.pixels[i * s..(i + 1) * s]
    }

    /// Number of classes: one more than the largest label.
    pub fn classes(&self) -> usize {
        self.labels.iter().copied().max().map_or(0, |m| m as usize + 1)
    }

    /// Checks an image array and a label array read from `images` and `labels`, and pairs them.
    pub fn from_idx(images: idx::Idx, labels: idx::Idx, image_name: &str, label_name: &str) -> Result<Images> {
        if images.dims.len() != 3 {
            bail!("{image_name}: an image file has 3 dimensions (count, rows, columns), this one has {:?}", images.dims);
        }
        if labels.dims.len() != 1 {
            bail!("{label_name}: a label file has 1 dimension, this one has {:?}", labels.dims);
        }
        if images.dims[0] != labels.dims[0] {
            bail!("{label_name}: {} labels, but {image_name} has {} images", labels.dims[0], images.dims[0]);
        }
        if images.dims[1] == 0 || images.dims[2] == 0 {
            bail!("{image_name}: empty images ({} x {})", images.dims[1], images.dims[2]);
        }
        Ok(Images { rows: images.dims[1], cols: images.dims[2], pixels: images.data, labels: labels.data })
    }
}

/// The file of `split` (`train` or `t10k`) and `kind` (`images-idx3` or `labels-idx1`) in
/// `dir`: `<split>-<kind>-ubyte`, or the same with `.gz`.
fn find(dir: &Path, split: &str, kind: &str) -> Result<PathBuf> {
    let plain = dir.join(format!("{split}-{kind}-ubyte"));
    let gz = dir.join(format!("{split}-{kind}-ubyte.gz"));
    for p in [&gz, &plain] {
        if p.is_file() {
            return Ok(p.clone());
        }
    }
    if !dir.is_dir() {
        bail!("--data {}: no such directory; {INSTALL_HINT}", dir.display());
    }
    bail!("--data {}: no {} (or .gz) there; {INSTALL_HINT}", dir.display(), plain.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default());
}

/// Reads one split (`train` or `t10k`) of an MNIST-family directory.
pub fn load_split(dir: &Path, split: &str) -> Result<Images> {
    let ip = find(dir, split, "images-idx3")?;
    let lp = find(dir, split, "labels-idx1")?;
    let (images, labels) = (idx::read(&ip)?, idx::read(&lp)?);
    Images::from_idx(images, labels, &ip.display().to_string(), &lp.display().to_string())
}

/// The class names of Fashion-MNIST, for captions.
pub const FASHION_CLASSES: [&str; 10] = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
