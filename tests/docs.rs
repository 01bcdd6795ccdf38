//! The documentation stands alone: every citation of docs/theory.md in the code resolves, every
//! relative link of the README and docs/ points to a file in the repository, and the README
//! stays a guide (at most 10 KB).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files_under(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, ext, out);
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(p);
        }
    }
}

/// Section numbers cited right after `docs/theory.md` ("§3", "§2 and §5", "§2, §5 and §7").
fn cited_sections(text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("docs/theory.md") {
        let rest: String = text[i + "docs/theory.md".len()..].chars().take(40).collect();
        for part in rest.split('§').skip(1) {
            let digits: String = part.chars().take_while(|c| c.is_ascii_digit()).collect();
            if digits.is_empty() {
                break;
            }
            out.push(digits.parse().unwrap());
            if !(part[digits.len()..].starts_with(", ") || part[digits.len()..].starts_with(" and ")) {
                break;
            }
        }
    }
    out
}

#[test]
fn every_theory_citation_resolves() {
    let theory = std::fs::read_to_string(root().join("docs/theory.md")).unwrap();
    let headings: BTreeSet<u32> = theory.lines().filter_map(|l| l.strip_prefix("## ")).filter_map(|l| l.split('.').next()?.parse().ok()).collect();
    assert!(headings.len() >= 7, "{headings:?}");
    let mut sources = Vec::new();
    for dir in ["src", "tests", "benches", "examples", "python/src"] {
        files_under(&root().join(dir), "rs", &mut sources);
    }
    let mut cited = 0;
    for f in &sources {
        let text = std::fs::read_to_string(f).unwrap();
        for s in cited_sections(&text) {
            assert!(headings.contains(&s), "{}: cites docs/theory.md §{s}, which does not exist", f.display());
            cited += 1;
        }
        assert!(!text.contains(concat!("THEORY", " §")), "{}: cites THEORY, which is not in the repository", f.display());
    }
    assert!(cited >= 10, "only {cited} citations found");
}

#[test]
fn relative_links_point_to_files_and_the_readme_is_a_guide() {
    let readme = root().join("README.md");
    // 10 KB read the strict way, as 10,000 bytes.
    assert!(std::fs::metadata(&readme).unwrap().len() <= 10_000, "README.md is over 10 KB (10,000 bytes)");
    let mut docs = vec![readme];
    files_under(&root().join("docs"), "md", &mut docs);
    let mut links = 0;
    for f in &docs {
        let text = std::fs::read_to_string(f).unwrap();
        for (i, _) in text.match_indices("](") {
            let target: String = text[i + 2..].chars().take_while(|&c| c != ')').collect();
            let target = target.split('#').next().unwrap();
            if target.is_empty() || target.contains("://") {
                continue;
            }
            let path = f.parent().unwrap().join(target);
            assert!(path.exists(), "{}: link to {target}, which does not exist", f.display());
            links += 1;
        }
    }
    assert!(links >= 10, "only {links} links checked");
}
