//! UID sets as IMAP writes them ([RFC 3501 §9] `sequence-set`).
//!
//! [RFC 3501 §9]: https://www.rfc-editor.org/rfc/rfc3501#section-9

/// The longest UID set put in one command. Exchange refuses commands longer than its
/// MaxCommandSize, about 10 KB by default, with `BAD Command Error. 10`; Dovecot's limit is
/// 64 KB. A set this long leaves room for the rest of any command under 8 KB.
pub(crate) const MAX_SET: usize = 7_900;

/// Formats UIDs as IMAP sequence sets of at most [`MAX_SET`] bytes each, merging runs.
pub(crate) fn sequence_sets(uids: &[u32]) -> Vec<String> {
    let mut sets = Vec::new();
    let mut current = String::new();
    for part in sequence_set(uids).split(',').filter(|p| !p.is_empty()) {
        if !current.is_empty() && current.len() + 1 + part.len() > MAX_SET {
            sets.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(',');
        }
        current.push_str(part);
    }
    if !current.is_empty() {
        sets.push(current);
    }
    sets
}

/// Formats UIDs as an IMAP sequence set, merging runs: `1:3,7,9:10`.
pub(crate) fn sequence_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_sets_merge_runs() {
        assert_eq!(sequence_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(sequence_set(&[5]), "5");
        assert_eq!(sequence_set(&[3, 1, 2, 2]), "1:3");
    }

    #[test]
    fn long_sets_are_split_under_the_limit_and_lose_nothing() {
        // Every other UID: no runs to merge, about 7 bytes a UID.
        let uids: Vec<u32> = (0..20_000).map(|i| 1_000_000 + 2 * i).collect();
        let sets = sequence_sets(&uids);
        assert!(sets.len() > 10, "{}", sets.len());
        assert!(sets.iter().all(|s| s.len() <= MAX_SET));
        let back: Vec<u32> = sets
            .iter()
            .flat_map(|s| s.split(','))
            .map(|u| u.parse().unwrap_or(0))
            .collect();
        assert_eq!(back, uids);
        assert_eq!(sequence_sets(&[1, 2, 3]), ["1:3"]);
        assert!(sequence_sets(&[]).is_empty());
    }
}
