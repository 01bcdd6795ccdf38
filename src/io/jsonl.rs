//! JSON-lines result files, shared by `sweep` and `hunt`: one record per finished run,
//! appended with a single write under a lock, so that a killed run loses at most the line it
//! was writing; resuming reads the finished records back, cutting off a torn last line first.

use std::fs::{File, OpenOptions};
#[cfg(feature = "cli")]
use std::io::IsTerminal;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[cfg(feature = "cli")]
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::bail;
use crate::error::{Error, Result};

/// The records of a JSON-lines file, and whether a torn last line was cut off.
#[derive(Debug)]
pub struct Finished<T> {
    /// Every complete record, in file order.
    pub records: Vec<T>,
    /// A torn last line (the process was killed mid-write) was cut off the file.
    pub repaired: bool,
}

/// Reads the finished records of `path` (none if it does not exist). A last line without its
/// newline is a torn write: it is cut off the file and reported. Any other line that is not
/// a record is an error naming the line.
pub fn read_finished<T: DeserializeOwned>(path: &Path) -> Result<Finished<T>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Finished { records: Vec::new(), repaired: false }),
        Err(e) => bail!("{}: cannot read: {e}", path.display()),
    };
    let (mut records, mut start, mut line) = (Vec::new(), 0usize, 1usize);
    let mut repaired = false;
    while start < bytes.len() {
        let Some(end) = bytes[start..].iter().position(|&b| b == b'\n').map(|p| start + p) else {
            repaired = true;
            break;
        };
        let rec = serde_json::from_slice(&bytes[start..end]).map_err(|e| Error::new(format!("{}: line {line} is not a valid record: {e}", path.display())))?;
        records.push(rec);
        start = end + 1;
        line += 1;
    }
    if repaired {
        let f = OpenOptions::new().write(true).open(path).map_err(|e| Error::new(format!("{}: cannot repair: {e}", path.display())))?;
        f.set_len(start as u64).map_err(|e| Error::new(format!("{}: cannot repair: {e}", path.display())))?;
    }
    Ok(Finished { records, repaired })
}

/// A JSON-lines file open for appending from several threads.
pub struct Appender {
    path: PathBuf,
    file: Mutex<File>,
}

impl Appender {
    /// Opens (or creates) `path` for appending.
    pub fn open(path: &Path) -> Result<Self> {
        let file =
            OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::new(format!("{}: cannot open for writing: {e}", path.display())))?;
        Ok(Appender { path: path.to_path_buf(), file: Mutex::new(file) })
    }

    /// Appends one record as one line, in a single write. A write that fails part way (a full
    /// disk) is cut off again, so the file keeps only whole records.
    pub fn write<T: Serialize>(&self, record: &T) -> Result<()> {
        let mut line = serde_json::to_string(record).map_err(|e| Error::new(format!("{}: cannot serialise a record: {e}", self.path.display())))?;
        line.push('\n');
        let mut f = self.file.lock().map_err(|_| Error::new("output lock poisoned"))?;
        let before = f.metadata().map(|m| m.len());
        f.write_all(line.as_bytes()).map_err(|e| {
            if let Ok(len) = before {
                let _ = f.set_len(len);
            }
            Error::new(format!("{}: write failed: {e}", self.path.display()))
        })
    }
}

/// A progress bar on stderr (done/total, rate, ETA) when `show` and stderr is a terminal;
/// hidden otherwise.
#[cfg(feature = "cli")]
pub fn progress(len: usize, unit: &str, show: bool) -> ProgressBar {
    if !(show && std::io::stderr().is_terminal()) {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    let template = format!("{{bar:40}} {{pos}}/{{len}} {unit}  {{per_sec}}  ETA {{eta}}  {{msg}}");
    pb.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    pb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Rec {
        i: u64,
    }

    #[test]
    fn appends_reads_back_and_cuts_a_torn_line() {
        let path = std::env::temp_dir().join(format!("mlab-nc-jsonl-{}.jsonl", std::process::id()));
        std::fs::remove_file(&path).ok();
        assert!(read_finished::<Rec>(&path).unwrap().records.is_empty());
        let out = Appender::open(&path).unwrap();
        for i in 0..3 {
            out.write(&Rec { i }).unwrap();
        }
        drop(out);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"{\"i\": 3");
        std::fs::write(&path, &bytes).unwrap();
        let f = read_finished::<Rec>(&path).unwrap();
        assert!(f.repaired);
        assert_eq!(f.records, vec![Rec { i: 0 }, Rec { i: 1 }, Rec { i: 2 }]);
        assert_eq!(std::fs::read(&path).unwrap().len(), bytes.len() - 7, "the torn line is cut off the file");
        std::fs::write(&path, "{\"i\": 0}\nnot json\n{\"i\": 2}\n").unwrap();
        let e = read_finished::<Rec>(&path).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        std::fs::remove_file(&path).ok();
    }
}
