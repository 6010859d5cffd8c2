//! Segment files: naming, listing and reading (plain or gzip).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// One segment file of a trail directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentFile {
    pub(crate) path: PathBuf,
    /// The seq of its first line.
    pub(crate) first_seq: u64,
    /// When it was started (Unix seconds).
    pub(crate) started: u64,
    pub(crate) gzip: bool,
}

impl SegmentFile {
    pub(crate) fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

pub(crate) fn segment_name(first_seq: u64, started: u64) -> String {
    format!("audit-{first_seq:020}-{started}.jsonl")
}

fn parse_name(name: &str) -> Option<(u64, u64, bool)> {
    let (stem, gzip) = match name.strip_suffix(".jsonl.gz") {
        Some(stem) => (stem, true),
        None => (name.strip_suffix(".jsonl")?, false),
    };
    let rest = stem.strip_prefix("audit-")?;
    let (seq, started) = rest.split_once('-')?;
    Some((seq.parse().ok()?, started.parse().ok()?, gzip))
}

/// The segments in `dir`, oldest first. A segment present both plain and compressed (a crash
/// during compression) is listed once, plain.
pub(crate) fn list(dir: &Path) -> std::io::Result<Vec<SegmentFile>> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((first_seq, started, gzip)) = parse_name(name) {
            all.push(SegmentFile {
                path: entry.path(),
                first_seq,
                started,
                gzip,
            });
        }
    }
    all.sort_by_key(|s| (s.first_seq, s.gzip));
    all.dedup_by(|later, earlier| later.first_seq == earlier.first_seq);
    Ok(all)
}

/// Reads a segment's lines: `(line number, bytes without the newline)`, and whether the last
/// line was complete (ended with a newline).
/// Numbered lines (1-based) and whether the last one was complete.
pub(crate) type Lines = (Vec<(u64, Vec<u8>)>, bool);

pub(crate) fn read_lines(segment: &SegmentFile) -> std::io::Result<Lines> {
    let file = std::fs::File::open(&segment.path)?;
    let reader: Box<dyn Read> = if segment.gzip {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut lines = Vec::new();
    let mut complete = true;
    let mut n = 0;
    loop {
        let mut buf = Vec::new();
        let read = reader.read_until(b'\n', &mut buf)?;
        if read == 0 {
            break;
        }
        n += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else {
            complete = false;
        }
        lines.push((n, buf));
    }
    Ok((lines, complete))
}
