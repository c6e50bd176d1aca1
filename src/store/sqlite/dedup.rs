//! Exact `messageId` dedup without a unique index on disk.
//!
//! A UNIQUE index on random message ids makes every commit rewrite index pages all over
//! the file (measured here: ~50 k inserts/s against ~440 k/s for plain appends). So the
//! index lives in memory and is rebuilt from the events table at start (the events table
//! is the truth; nothing here needs to survive a crash).
//!
//! Each entry is one `u64`: the top 44 bits of a keyed hash of (source, messageId) and the
//! low 20 bits of the *segment* (event id / 4096) where that message was stored. A lookup
//! that matches the 44 bits is verified against the rows of that segment on disk, so a
//! hash collision can never drop a distinct message: the answer is exact.
//!
//! New entries go to a small hash table (8 bytes each, capped at [`ACTIVE_ENTRIES_MAX`],
//! below the size where it would double); when it is full its entries are sorted and
//! merged, in place and from the back, into one sorted run ([`Sealed`]) with a directory of
//! where each run of equal top bits starts (at least 2^16 runs, about 32 entries each past
//! 2 M entries): a lookup reads one directory slot and binary-searches one run, a few cache
//! lines. (Interpolating from the hash alone is off by ~sqrt(n)/2 places: a gallop over
//! thousands of entries, which cost the single writer a fifth of its time.) The directory
//! implies each sealed entry's top 16 bits, so it keeps the other 48: 6 bytes per message
//! in the window (60 MB for 10 M messages, against 80 MB as whole `u64`s).

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

/// Rows per segment, as a shift: 4096 rows are scanned at most to verify a match.
pub const SEGMENT_SHIFT: u32 = 12;
const SEGMENT_BITS: u32 = 20;
const SEGMENT_MASK: u64 = (1 << SEGMENT_BITS) - 1;

/// Entries the hash table holds before they are sealed into the sorted part: just under
/// 7/8 of 2^20 buckets, hashbrown's growth point, so the table never doubles (~9 MiB).
pub const ACTIVE_ENTRIES_MAX: usize = 900_000;

pub struct Dedup {
    /// Recent entries.
    table: HashTable<u64>,
    /// Older entries, sorted ascending (so by hash bits first).
    sealed: Sealed,
    hasher: RandomState,
    /// (segment number, received_ms of its first row), oldest first.
    segments: VecDeque<(i64, i64)>,
    window_ms: i64,
}

/// A message's hash, computed once per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key(u64);

impl Dedup {
    pub fn new(window_days: u32) -> Dedup {
        Dedup {
            table: HashTable::new(),
            sealed: Sealed::default(),
            hasher: RandomState::new(),
            segments: VecDeque::new(),
            window_ms: i64::from(window_days) * 86_400_000,
        }
    }

    pub fn key(&self, source: &str, message_id: &str) -> Key {
        Key(self.hasher.hash_one((source, message_id)))
    }

    pub fn len(&self) -> usize {
        self.table.len() + self.sealed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row id ranges (inclusive) where a message with this key may be stored. Empty in the
    /// common case of a new message; the caller checks each range on disk.
    pub fn candidates(&self, key: Key) -> Vec<(i64, i64)> {
        let Some(&(newest, _)) = self.segments.back() else {
            return Vec::new();
        };
        let prefix = key.0 >> SEGMENT_BITS;
        self.table
            .iter_hash(table_hash(key.0))
            .copied()
            .filter(|&entry| entry >> SEGMENT_BITS == prefix)
            .chain(self.sealed.matching(key.0))
            .map(|entry| {
                let back = ((newest as u64).wrapping_sub(entry) & SEGMENT_MASK) as i64;
                let segment = newest - back;
                (
                    segment << SEGMENT_SHIFT,
                    ((segment + 1) << SEGMENT_SHIFT) - 1,
                )
            })
            .collect()
    }

    /// Records that the message with `key` is stored at row `id`, received at `received_ms`.
    /// Returns the entry, to undo with [`Dedup::remove`] if the transaction rolls back.
    pub fn insert(&mut self, key: Key, id: i64, received_ms: i64) -> u64 {
        let segment = id >> SEGMENT_SHIFT;
        if self
            .segments
            .back()
            .is_none_or(|&(newest, _)| newest < segment)
        {
            self.segments.push_back((segment, received_ms));
        }
        let entry = (key.0 & !SEGMENT_MASK) | (segment as u64 & SEGMENT_MASK);
        self.table
            .insert_unique(table_hash(entry), entry, |&e| table_hash(e));
        entry
    }

    /// Moves the hash table's entries into the sorted part once the table is full. Call it
    /// between transactions only: [`Dedup::remove`] undoes entries in the table.
    pub fn seal_if_full(&mut self) {
        if self.table.len() < ACTIVE_ENTRIES_MAX {
            return;
        }
        let mut fresh: Vec<u64> = self.table.drain().collect();
        fresh.sort_unstable();
        self.sealed.merge(&fresh);
    }

    /// Undoes an [`Dedup::insert`] whose row was rolled back.
    pub fn remove(&mut self, entry: u64) {
        if let Ok(found) = self.table.find_entry(table_hash(entry), |&e| e == entry) {
            found.remove();
        }
    }

    /// Forgets segments whose every row was received before the window. Returns how many
    /// entries were dropped.
    pub fn expire(&mut self, now_ms: i64) -> usize {
        let cutoff = now_ms - self.window_ms;
        let mut dropped_any = false;
        while self.segments.len() >= 2 && self.segments[1].1 < cutoff {
            self.segments.pop_front();
            dropped_any = true;
        }
        if !dropped_any {
            return 0;
        }
        let (Some(&(oldest, _)), Some(&(newest, _))) =
            (self.segments.front(), self.segments.back())
        else {
            return 0;
        };
        let span = (newest - oldest) as u64;
        let before = self.len();
        let keep = |entry: &u64| ((newest as u64).wrapping_sub(*entry) & SEGMENT_MASK) <= span;
        self.table.retain(|entry| keep(entry));
        self.sealed.retain(keep);
        before - self.len()
    }
}

/// Top bits of a sealed entry that its directory run implies (the directory has at least
/// this many bits); the entry keeps the other [`STORED_BITS`].
const IMPLIED_BITS: u32 = 16;
const STORED_BITS: u32 = 64 - IMPLIED_BITS;
const STORED_MASK: u64 = (1 << STORED_BITS) - 1;

/// Entries per directory run, on average, once there are more runs than `2^IMPLIED_BITS`.
const ENTRIES_PER_RUN: usize = 32;

/// The sealed entries, sorted, each stored as its low 48 bits (`high`: bits 47..16,
/// `low`: bits 15..0); `starts[r]` is the index of the first entry whose top `bits` bits
/// are >= r (`starts[2^bits]` = the length), so an entry's run gives its top 16 bits.
#[derive(Debug, Default)]
struct Sealed {
    high: Vec<u32>,
    low: Vec<u16>,
    bits: u32,
    /// Empty while there are no entries.
    starts: Vec<u32>,
}

impl Sealed {
    fn len(&self) -> usize {
        self.high.len()
    }

    fn bits_for(len: usize) -> u32 {
        (len / ENTRIES_PER_RUN).max(1).ilog2().max(IMPLIED_BITS)
    }

    fn run(bits: u32, value: u64) -> usize {
        (value >> (64 - bits)) as usize
    }

    fn stored(&self, i: usize) -> u64 {
        (u64::from(self.high[i]) << 16) | u64::from(self.low[i])
    }

    /// Stores `entry`'s low 48 bits at `i` (its run keeps the rest).
    fn set(&mut self, i: usize, entry: u64) {
        self.high[i] = (entry >> 16) as u32;
        self.low[i] = entry as u16;
    }

    /// Entry `i` whole, given the run `run` holding it.
    fn entry(&self, i: usize, run: usize) -> u64 {
        ((run as u64 >> (self.bits - IMPLIED_BITS)) << STORED_BITS) | self.stored(i)
    }

    /// The entries whose top 44 bits (hash bits) are those of `key`.
    fn matching(&self, key: u64) -> impl Iterator<Item = u64> + '_ {
        let (mut lo, hi, run) = if self.starts.is_empty() {
            (0, 0, 0)
        } else {
            let run = Self::run(self.bits, key);
            (
                self.starts[run] as usize,
                self.starts[run + 1] as usize,
                run,
            )
        };
        // Within a run every entry shares the key's top bits: compare the stored ones.
        let target = key & !SEGMENT_MASK & STORED_MASK;
        let mut len = hi - lo;
        while len > 0 {
            let half = len / 2;
            if self.stored(lo + half) < target {
                lo += half + 1;
                len -= half + 1;
            } else {
                len = half;
            }
        }
        (lo..hi)
            .map(move |i| self.entry(i, run))
            .take_while(move |entry| entry >> SEGMENT_BITS == key >> SEGMENT_BITS)
    }

    /// Merges `fresh` (sorted) in, in place from the back, and counts the new runs as the
    /// entries land.
    fn merge(&mut self, fresh: &[u64]) {
        let old_len = self.len();
        let len = old_len + fresh.len();
        let bits = Self::bits_for(len);
        let mut starts = vec![0_u32; (1 << bits) + 1];
        self.high.reserve_exact(fresh.len());
        self.low.reserve_exact(fresh.len());
        self.high.resize(len, 0);
        self.low.resize(len, 0);
        // The old run holding entry i - 1, walked down as i falls.
        let mut run = self.starts.len().saturating_sub(2);
        let (mut i, mut j, mut k) = (old_len, fresh.len(), len);
        while j > 0 {
            k -= 1;
            let old = (i > 0).then(|| {
                while self.starts[run] as usize > i - 1 {
                    run -= 1;
                }
                self.entry(i - 1, run)
            });
            let value = match old {
                Some(old) if old > fresh[j - 1] => {
                    i -= 1;
                    old
                }
                _ => {
                    j -= 1;
                    fresh[j]
                }
            };
            self.set(k, value);
            starts[Self::run(bits, value) + 1] += 1;
        }
        // Entries below i stayed where they were.
        let mut run = 0;
        for index in 0..i {
            while self.starts[run + 1] as usize <= index {
                run += 1;
            }
            starts[Self::run(bits, self.entry(index, run)) + 1] += 1;
        }
        for r in 1..starts.len() {
            starts[r] += starts[r - 1];
        }
        self.bits = bits;
        self.starts = starts;
        debug_assert!(self.is_sorted(), "sealed entries stay sorted");
    }

    /// Keeps the entries `keep` holds for (their order, and so their runs, unchanged).
    fn retain(&mut self, keep: impl Fn(&u64) -> bool) {
        if self.starts.is_empty() {
            return;
        }
        let mut kept = 0;
        let mut starts = vec![0_u32; self.starts.len()];
        for run in 0..self.starts.len() - 1 {
            for index in self.starts[run] as usize..self.starts[run + 1] as usize {
                let entry = self.entry(index, run);
                if keep(&entry) {
                    self.set(kept, entry);
                    kept += 1;
                }
            }
            starts[run + 1] = kept as u32;
        }
        self.high.truncate(kept);
        self.low.truncate(kept);
        self.high.shrink_to_fit();
        self.low.shrink_to_fit();
        self.starts = if kept == 0 { Vec::new() } else { starts };
    }

    fn is_sorted(&self) -> bool {
        let mut previous = 0;
        self.entries()
            .all(|entry| std::mem::replace(&mut previous, entry) <= entry)
    }

    /// Every entry whole, in order.
    fn entries(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.starts.len().saturating_sub(1)).flat_map(move |run| {
            (self.starts[run] as usize..self.starts[run + 1] as usize)
                .map(move |i| self.entry(i, run))
        })
    }
}

/// The 44 hash bits of an entry spread over all 64 bits, as hashbrown uses both the low
/// bits (bucket) and the top 7 bits (control byte).
fn table_hash(entry: u64) -> u64 {
    let bits = entry >> SEGMENT_BITS;
    bits ^ (bits << (64 - SEGMENT_BITS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_point_at_the_segment_of_the_stored_row() {
        let mut dedup = Dedup::new(7);
        let key = dedup.key("web", "m-1");
        assert!(dedup.candidates(key).is_empty());
        dedup.insert(key, 5_000, 0);
        assert_eq!(dedup.candidates(key), vec![(4096, 8191)]);
        assert!(dedup.candidates(dedup.key("web", "m-2")).is_empty());
        assert!(dedup.candidates(dedup.key("mobile", "m-1")).is_empty());
    }

    #[test]
    fn sealed_entries_are_kept_whole_in_six_bytes_and_found_as_a_plain_search_finds_them() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut sealed = Sealed::default();
        let mut all: Vec<u64> = Vec::new();
        // Merges of growing batches cross the directory sizes (2^16 runs, then more).
        for n in [0, 1, 3, 100, 10_000, 100_000, 4_500_000] {
            let mut fresh: Vec<u64> = (0..n).map(|_| rng.random()).collect();
            fresh.extend(fresh.clone().iter().take(n / 10)); // duplicates
            fresh.sort_unstable();
            sealed.merge(&fresh);
            all.extend(&fresh);
            all.sort_unstable();
            assert_eq!(
                sealed.entries().collect::<Vec<u64>>(),
                all,
                "after merging {n}"
            );
            let mut targets: Vec<u64> = (0..300).map(|_| rng.random()).collect();
            targets.extend(all.iter().step_by(all.len() / 200 + 1).copied());
            targets.extend([0, 1, u64::MAX, u64::MAX - 1]);
            for target in targets {
                let prefix = target >> SEGMENT_BITS;
                let (from, to) = (
                    all.partition_point(|e| e >> SEGMENT_BITS < prefix),
                    all.partition_point(|e| e >> SEGMENT_BITS <= prefix),
                );
                assert_eq!(
                    sealed.matching(target).collect::<Vec<u64>>(),
                    all[from..to],
                    "n {n} target {target}"
                );
            }
        }
        assert!(
            sealed.bits > IMPLIED_BITS,
            "the last merge made a directory of more than 2^16 runs"
        );
        let odd = |e: &u64| e & 1 == 1;
        sealed.retain(|e| odd(e));
        all.retain(odd);
        assert_eq!(sealed.entries().collect::<Vec<u64>>(), all);
        for target in all.iter().step_by(1_000) {
            assert!(sealed.matching(*target).any(|e| e == *target));
        }
        sealed.retain(|_| false);
        assert_eq!((sealed.len(), sealed.matching(all[0]).count()), (0, 0));
    }

    #[test]
    fn sealed_entries_are_still_found_and_expire() {
        let mut dedup = Dedup::new(1);
        let keys: Vec<Key> = (0..ACTIVE_ENTRIES_MAX + 10)
            .map(|i| dedup.key("s", &format!("m-{i}")))
            .collect();
        for (i, key) in keys.iter().enumerate() {
            dedup.insert(*key, i as i64 + 1, 0);
            dedup.seal_if_full();
        }
        assert_eq!(dedup.sealed.len(), ACTIVE_ENTRIES_MAX);
        assert_eq!(dedup.len(), ACTIVE_ENTRIES_MAX + 10);
        for (i, key) in keys.iter().enumerate().step_by(997) {
            let segment = (i as i64 + 1) >> SEGMENT_SHIFT;
            assert!(
                dedup.candidates(*key).contains(&(
                    segment << SEGMENT_SHIFT,
                    ((segment + 1) << SEGMENT_SHIFT) - 1
                )),
                "entry {i}"
            );
        }
        assert!(dedup.candidates(dedup.key("s", "never")).is_empty());
        let day = 86_400_000;
        let late = dedup.key("s", "late");
        dedup.insert(late, ACTIVE_ENTRIES_MAX as i64 + 8192, 3 * day);
        let dropped = dedup.expire(3 * day);
        assert!(
            dropped > 0 && dedup.candidates(keys[0]).is_empty(),
            "old sealed entries expire"
        );
        assert!(
            !dedup.candidates(keys[keys.len() - 1]).is_empty(),
            "the segment just before the window's start is kept"
        );
        assert!(!dedup.candidates(late).is_empty());
        assert_eq!(dedup.len() + dropped, ACTIVE_ENTRIES_MAX + 11);
    }

    #[test]
    fn expire_drops_only_segments_wholly_before_the_window() {
        let day = 86_400_000;
        let mut dedup = Dedup::new(1);
        let old = dedup.key("s", "old");
        let new = dedup.key("s", "new");
        dedup.insert(old, 1, 0);
        dedup.insert(new, 4096, 2 * day);
        assert_eq!(
            dedup.expire(2 * day),
            0,
            "segment 1 began before the cutoff: keep segment 0"
        );
        assert_eq!(
            dedup.expire(3 * day + 1),
            1,
            "all of segment 0 is older than the window"
        );
        assert!(dedup.candidates(old).is_empty());
        assert_eq!(dedup.candidates(new), vec![(4096, 8191)]);
    }
}
