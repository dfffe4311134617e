//! S3 event order per object: which messages of a batch apply, which are superseded, and the
//! marker each object must carry before anything of it is written.
//!
//! The rule is simple to state: for one object, only the messages of its newest event (the
//! highest sequencer among the batch and the stored marker) apply; older ones are acknowledged
//! and dropped. The marker is moved forward with compare-and-set *before* any write, so a
//! writer that raced a newer event finds the newer marker when it checks again afterwards.

use std::collections::{BTreeMap, HashMap};

use crate::es::{Expect, SourceMarker, StoredMarker};
use crate::ids::source_marker_id;
use crate::message::{ChunkMessage, Operation};

/// The sequencer a hand-made removal without one stands for: after every real event.
const AFTER_EVERYTHING: &str = "~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~";

/// What becomes of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Apply it as the object's event `sequencer` (empty for a first backfill).
    Apply { sequencer: String },
    /// A newer event for its object exists: acknowledge it and do nothing.
    Superseded,
    /// Nothing to do (a sweep without a sequencer).
    Nothing,
}

/// A marker write needed before the object's messages apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub id: String,
    pub marker: SourceMarker,
    pub expect: Expect,
}

/// The decisions for a batch's messages (by message position) and the marker claims.
#[derive(Debug, Default)]
pub struct Order {
    pub decisions: HashMap<usize, Decision>,
    pub claims: Vec<Claim>,
}

/// The effective sequencer of a message against its object's stored marker; `None` when it
/// cannot apply. A backfill message (no sequencer) is the object's first sighting when there is
/// no marker (or only a backfill's), and the marker's own event when it carries the same eTag;
/// any other backfill is of a version an event has already decided about.
fn effective(message: &ChunkMessage, marker: Option<&SourceMarker>) -> Option<String> {
    match (&message.source.sequencer, message.op) {
        (Some(s), _) => Some(s.clone()),
        (None, Operation::Delete) => Some(AFTER_EVERYTHING.to_owned()),
        (None, Operation::Sweep) => None,
        (None, Operation::Index) => match marker {
            None => Some(String::new()),
            Some(m) if m.sequencer.is_empty() && !m.deleted => Some(String::new()),
            Some(m) if !m.deleted && m.etag.is_some() && m.etag == message.source.etag => {
                Some(m.sequencer.clone())
            }
            Some(_) => None,
        },
    }
}

/// Orders the batch's messages (`(position, message)`) per object against the stored markers.
pub fn order(
    messages: &[(usize, &ChunkMessage)],
    markers: &HashMap<String, StoredMarker>,
    now: &str,
) -> Order {
    let mut by_object: BTreeMap<String, Vec<(usize, &ChunkMessage)>> = BTreeMap::new();
    for &(i, m) in messages {
        by_object
            .entry(source_marker_id(&m.source.bucket, &m.source.key))
            .or_default()
            .push((i, m));
    }
    let mut order = Order::default();
    for (id, group) in by_object {
        let stored = markers.get(&id);
        let marker = stored.map(|s| &s.marker);
        let effs: Vec<Option<String>> = group.iter().map(|(_, m)| effective(m, marker)).collect();
        // A hand-made removal (no sequencer) deletes everything but moves no marker.
        let real = |(m, e): &(&ChunkMessage, &Option<String>)| {
            m.source.sequencer.is_some() || m.op == Operation::Index && e.is_some()
        };
        let newest = group
            .iter()
            .map(|(_, m)| *m)
            .zip(&effs)
            .filter(real)
            .filter_map(|(_, e)| e.clone())
            .chain(marker.map(|m| m.sequencer.clone()))
            .max();
        let newest_content = newest
            .as_ref()
            .and_then(|n| content_of(&group, &effs, marker, n));
        let applied = decide(&group, &effs, newest.as_ref(), newest_content, &mut order);
        let Some(newest) = newest else {
            continue;
        };
        // Already claimed: a retry, or another message of the same event.
        if marker.is_some_and(|m| m.sequencer == newest) {
            continue;
        }
        if let Some(marker) = claimed_marker(&applied, newest, now) {
            order.claims.push(Claim {
                id,
                marker,
                expect: stored.map(|s| s.version).into(),
            });
        }
    }
    order
}

/// Each message of one object's group: applied (the newest event's, or a hand-made removal),
/// superseded, or nothing to do. Returns the messages of the newest event.
///
/// The index messages of an older event, or a backfill, that read the same content (eTag) as
/// the newest event apply as that event too: of one content, the latest read holds the object
/// (it was cut under the settings in force later), which the writes decide chunk by chunk.
fn decide<'m>(
    group: &[(usize, &'m ChunkMessage)],
    effs: &[Option<String>],
    newest: Option<&String>,
    newest_content: Option<&str>,
    order: &mut Order,
) -> Vec<&'m ChunkMessage> {
    let mut applied = Vec::new();
    let same_content = |m: &ChunkMessage| {
        m.op == Operation::Index
            && newest_content.is_some()
            && m.source.etag.as_deref() == newest_content
    };
    for ((i, m), eff) in group.iter().zip(effs) {
        let decision = match eff {
            Some(e) if m.source.sequencer.is_none() && m.op == Operation::Delete => {
                Decision::Apply {
                    sequencer: e.clone(),
                }
            }
            Some(e) if Some(e) == newest => {
                applied.push(*m);
                Decision::Apply {
                    sequencer: e.clone(),
                }
            }
            _ if same_content(m) => {
                applied.push(*m);
                Decision::Apply {
                    sequencer: newest.cloned().unwrap_or_default(),
                }
            }
            None if m.op == Operation::Sweep => Decision::Nothing,
            None | Some(_) => Decision::Superseded,
        };
        order.decisions.insert(*i, decision);
    }
    applied
}

/// The content (eTag) of the object's version as of event `newest`: the marker's, when it is
/// that event, else that of a message of that event (an index or a sweep; none for a deletion).
fn content_of<'g>(
    group: &[(usize, &'g ChunkMessage)],
    effs: &[Option<String>],
    marker: Option<&'g SourceMarker>,
    newest: &str,
) -> Option<&'g str> {
    if let Some(m) = marker.filter(|m| m.sequencer == newest) {
        return m.etag.as_deref().filter(|_| !m.deleted);
    }
    let of_newest: Vec<&ChunkMessage> = group
        .iter()
        .zip(effs)
        .filter(|(_, e)| e.as_deref() == Some(newest))
        .map(|((_, m), _)| *m)
        .collect();
    if of_newest.iter().any(|m| m.op == Operation::Delete) {
        return None;
    }
    of_newest.iter().find_map(|m| m.source.etag.as_deref())
}

/// The marker the newest event's messages claim: its sequencer, whether it removed the object,
/// and the version's eTag (from its chunks or, for a version without records, its sweep).
fn claimed_marker(applied: &[&ChunkMessage], newest: String, now: &str) -> Option<SourceMarker> {
    let first = applied.first()?;
    let deleted = applied.iter().any(|m| m.op == Operation::Delete);
    let etag = applied
        .iter()
        .find(|m| m.op == Operation::Index)
        .or_else(|| applied.iter().find(|m| m.op == Operation::Sweep))
        .and_then(|m| m.source.etag.clone());
    Some(SourceMarker {
        bucket: first.source.bucket.clone(),
        key: first.source.key.clone(),
        sequencer: newest,
        deleted,
        etag: if deleted { None } else { etag },
        updated_at: now.to_owned(),
        swept: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::es::DocVersion;
    use crate::ids::normalize_sequencer;
    use crate::message::SourceRef;

    fn msg(op: Operation, key: &str, seq: Option<&str>, etag: Option<&str>) -> ChunkMessage {
        ChunkMessage {
            v: 1,
            op,
            source: SourceRef {
                bucket: "b".into(),
                key: key.into(),
                version_id: None,
                etag: etag.map(str::to_owned),
                sequencer: seq.map(normalize_sequencer),
                read_at: None,
            },
            chunks: Vec::new(),
            requeues: 0,
            chunks_expected: None,
            indexed_seen: None,
            scope: Default::default(),
        }
    }

    fn stored(key: &str, seq: &str, deleted: bool, etag: Option<&str>) -> (String, StoredMarker) {
        (
            source_marker_id("b", key),
            StoredMarker {
                marker: SourceMarker {
                    bucket: "b".into(),
                    key: key.into(),
                    sequencer: normalize_sequencer(seq),
                    deleted,
                    etag: etag.map(str::to_owned),
                    updated_at: "t".into(),
                    swept: false,
                },
                version: DocVersion {
                    seq_no: 5,
                    primary_term: 1,
                },
            },
        )
    }

    fn run(messages: &[ChunkMessage], markers: &[(String, StoredMarker)]) -> Order {
        let indexed: Vec<(usize, &ChunkMessage)> = messages.iter().enumerate().collect();
        order(&indexed, &markers.iter().cloned().collect(), "now")
    }

    fn applied(order: &Order, i: usize) -> bool {
        matches!(order.decisions[&i], Decision::Apply { .. })
    }

    #[test]
    fn only_the_newest_event_of_an_object_applies() {
        let o = run(
            &[
                msg(Operation::Index, "k", Some("0A"), Some("e1")),
                msg(Operation::Delete, "k", Some("0C"), None),
                msg(Operation::Index, "k", Some("0B"), Some("e2")),
                msg(Operation::Index, "other", Some("01"), Some("e9")),
            ],
            &[],
        );
        assert!(!applied(&o, 0) && applied(&o, 1) && !applied(&o, 2) && applied(&o, 3));
        let claim = o.claims.iter().find(|c| c.marker.key == "k").unwrap();
        assert!(claim.marker.deleted);
        assert_eq!(claim.expect, Expect::Absent);
        assert_eq!(o.claims.len(), 2);
    }

    #[test]
    fn a_stored_newer_marker_supersedes_and_an_older_one_is_claimed_over() {
        let markers = [stored("k", "0B", false, Some("e2"))];
        let o = run(
            &[msg(Operation::Index, "k", Some("0A"), Some("e1"))],
            &markers,
        );
        assert_eq!(o.decisions[&0], Decision::Superseded);
        assert!(o.claims.is_empty());

        let o = run(&[msg(Operation::Delete, "k", Some("0C"), None)], &markers);
        assert!(applied(&o, 0));
        assert_eq!(o.claims[0].expect, Expect::Version(markers[0].1.version));

        // The same event again (a retry, or another message of it) applies without a claim.
        let o = run(&[msg(Operation::Sweep, "k", Some("0B"), None)], &markers);
        assert!(applied(&o, 0) && o.claims.is_empty());
    }

    #[test]
    fn a_version_without_records_is_marked_with_its_etag() {
        // Its only message is the sweep: the marker still says which version was read, so
        // `sakuin reconcile` knows the object holds nothing rather than that it was missed.
        let o = run(
            &[msg(Operation::Sweep, "empty", Some("0C"), Some("e0"))],
            &[],
        );
        assert!(applied(&o, 0));
        assert_eq!(o.claims[0].marker.etag.as_deref(), Some("e0"));
        assert!(!o.claims[0].marker.deleted);
    }

    #[test]
    fn backfills_apply_to_unseen_objects_and_to_the_same_version_only() {
        let backfill = msg(Operation::Index, "k", None, Some("e2"));
        let o = run(std::slice::from_ref(&backfill), &[]);
        assert_eq!(
            o.decisions[&0],
            Decision::Apply {
                sequencer: String::new()
            }
        );
        assert_eq!(o.claims[0].marker.etag.as_deref(), Some("e2"));

        let same = [stored("k", "0B", false, Some("e2"))];
        let o = run(std::slice::from_ref(&backfill), &same);
        assert_eq!(
            o.decisions[&0],
            Decision::Apply {
                sequencer: normalize_sequencer("0B")
            }
        );
        assert!(o.claims.is_empty());

        for other in [
            stored("k", "0B", false, Some("e1")),
            stored("k", "0B", true, None),
        ] {
            let o = run(std::slice::from_ref(&backfill), &[other]);
            assert_eq!(o.decisions[&0], Decision::Superseded);
        }
        // Any real event wins over a backfill's empty sequencer.
        let o = run(
            &[
                backfill.clone(),
                msg(Operation::Index, "k", Some("01"), Some("e3")),
            ],
            &[],
        );
        assert!(!applied(&o, 0) && applied(&o, 1));
    }

    #[test]
    fn a_sweep_without_a_sequencer_does_nothing_and_a_hand_made_delete_removes_all() {
        let o = run(
            &[
                msg(Operation::Sweep, "k", None, None),
                msg(Operation::Delete, "j", None, None),
            ],
            &[stored("j", "0B", false, Some("e"))],
        );
        assert_eq!(o.decisions[&0], Decision::Nothing);
        assert_eq!(
            o.decisions[&1],
            Decision::Apply {
                sequencer: AFTER_EVERYTHING.into()
            }
        );
        assert!(o.claims.is_empty(), "a hand-made delete moves no marker");
    }
}
