//! [`verify_dir`]: checks a trail directory, segment by segment; [`verify_dir_with_witness`]
//! checks it against its witness too.

use std::path::Path;

use super::chain::{Broken, Location, Verified, Verifier};
use super::segment;
use super::witness::{Seal, WitnessFile};

/// Verifies the trail in `dir` with the signing `key` (when given): every line's hash, the
/// chain across segments, every digest (its count, its link to the previous digest, its HMAC),
/// and that retention deleted only what the last digest says.
///
/// Returns what was found, or the first broken line. An open tail (records after the last
/// digest, or a torn last line from a crash) is not an error here: see
/// [`Verified::open_tail`]. A directory without segments is an error.
///
/// A trail cut back to an earlier digest (its newest segment deleted, or truncated right after
/// a digest) looks closed here: [`verify_dir_with_witness`] detects it.
pub fn verify_dir(dir: &Path, key: Option<&[u8]>) -> Result<Verified, Broken> {
    verify(dir, key, None)
}

/// [`verify_dir`], and checks the trail against the witness file at `witness`
/// ([`WitnessFile`]): the trail must hold the digest the witness sealed, and must not end
/// before it. A missing witness is an error when the trail holds a digest (it was deleted, so
/// a cut could not be detected); an unreadable one always is.
pub fn verify_dir_with_witness(
    dir: &Path,
    key: Option<&[u8]>,
    witness: &Path,
) -> Result<Verified, Broken> {
    let at_witness = |reason: String| Broken {
        seq: 0,
        location: Location {
            source: witness.display().to_string(),
            line: 0,
        },
        reason,
    };
    match WitnessFile::new(witness).read() {
        Err(e) => Err(at_witness(e.to_string())),
        Ok(Some(seal)) => verify(dir, key, Some(seal)),
        Ok(None) => {
            let verified = verify(dir, key, None)?;
            match &verified.last_seal {
                Some(last) => Err(at_witness(format!(
                    "the witness is missing, but the trail is sealed up to seq {}: it was deleted or moved, so a trail cut back to an earlier digest cannot be ruled out; compare with a copy kept elsewhere (the `qiflow::audit` log lines, the qiflow_audit_sealed_records gauge)",
                    last.seq
                ))),
                None => Ok(verified),
            }
        }
    }
}

fn verify(dir: &Path, key: Option<&[u8]>, witness: Option<Seal>) -> Result<Verified, Broken> {
    let at_dir = |reason: String| Broken {
        seq: 0,
        location: Location {
            source: dir.display().to_string(),
            line: 0,
        },
        reason,
    };
    let segments = segment::list(dir).map_err(|e| at_dir(format!("cannot list: {e}")))?;
    if segments.is_empty() {
        return Err(at_dir(
            "no audit segments (audit-*.jsonl) here: wrong directory, or the trail was deleted"
                .into(),
        ));
    }
    let mut verifier = Verifier::new(key);
    if let Some(seal) = witness {
        verifier.expect_witness(seal);
    }
    let mut torn = false;
    for (i, seg) in segments.iter().enumerate() {
        let name = seg.name();
        let (lines, complete) = segment::read_lines(seg).map_err(|e| Broken {
            seq: verifier.expected_seq(),
            location: Location {
                source: name.clone(),
                line: 0,
            },
            reason: format!("cannot read the segment: {e}"),
        })?;
        if seg.first_seq != verifier.expected_seq() && i > 0 && lines.is_empty() {
            return Err(Broken {
                seq: verifier.expected_seq(),
                location: Location {
                    source: name,
                    line: 0,
                },
                reason: "empty segment where records were expected".into(),
            });
        }
        let last = lines.len();
        for (n, text) in lines {
            let location = Location {
                source: name.clone(),
                line: n,
            };
            if n as usize == last && !complete {
                if i + 1 == segments.len() {
                    torn = true; // cut mid-write by a crash; never acknowledged
                    break;
                }
                return Err(Broken {
                    seq: verifier.expected_seq(),
                    location,
                    reason: "the segment ends in the middle of a line, but it is not the last segment: it was cut".into(),
                });
            }
            verifier.push(&text, location)?;
        }
    }
    let mut verified = verifier.finish()?;
    verified.torn_tail = torn;
    Ok(verified)
}
