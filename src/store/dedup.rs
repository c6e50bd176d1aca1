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
//! Memory is 8 bytes per message in the window: new entries go to a small hash table
//! (capped at [`ACTIVE_ENTRIES_MAX`], below the size where it would double); when it is
//! full its entries are sorted and merged, in place and from the back, into one sorted
//! `Vec<u64>`, with a directory of where each run of equal top bits starts (about 32
//! entries per run): a lookup reads one directory slot and binary-searches one run, a few
//! cache lines. (Interpolating from the hash alone is off by ~sqrt(n)/2 places: a gallop
//! over thousands of entries, which cost the single writer a fifth of its time.)

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
    sealed: Vec<u64>,
    /// `sealed` cut by the entries' top bits (see [`Directory`]).
    directory: Directory,
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
            sealed: Vec::new(),
            directory: Directory::default(),
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
        let Some(&(newest, _)) = self.segments.back() else { return Vec::new() };
        let prefix = key.0 >> SEGMENT_BITS;
        let start = self.directory.lower_bound(&self.sealed, key.0 & !SEGMENT_MASK);
        let sealed = self.sealed[start..].iter().take_while(|&&entry| entry >> SEGMENT_BITS == prefix);
        self.table
            .iter_hash(table_hash(key.0))
            .filter(|&&entry| entry >> SEGMENT_BITS == prefix)
            .chain(sealed)
            .map(|&entry| {
                let back = ((newest as u64).wrapping_sub(entry) & SEGMENT_MASK) as i64;
                let segment = newest - back;
                (segment << SEGMENT_SHIFT, ((segment + 1) << SEGMENT_SHIFT) - 1)
            })
            .collect()
    }

    /// Records that the message with `key` is stored at row `id`, received at `received_ms`.
    /// Returns the entry, to undo with [`Dedup::remove`] if the transaction rolls back.
    pub fn insert(&mut self, key: Key, id: i64, received_ms: i64) -> u64 {
        let segment = id >> SEGMENT_SHIFT;
        if self.segments.back().is_none_or(|&(newest, _)| newest < segment) {
            self.segments.push_back((segment, received_ms));
        }
        let entry = (key.0 & !SEGMENT_MASK) | (segment as u64 & SEGMENT_MASK);
        self.table.insert_unique(table_hash(entry), entry, |&e| table_hash(e));
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
        let old_len = self.sealed.len();
        self.sealed.reserve_exact(fresh.len());
        self.sealed.resize(old_len + fresh.len(), 0);
        // Merge from the back so no second buffer is needed.
        let (mut i, mut j, mut k) = (old_len, fresh.len(), old_len + fresh.len());
        while j > 0 {
            k -= 1;
            if i > 0 && self.sealed[i - 1] > fresh[j - 1] {
                self.sealed[k] = self.sealed[i - 1];
                i -= 1;
            } else {
                self.sealed[k] = fresh[j - 1];
                j -= 1;
            }
        }
        debug_assert!(self.sealed.windows(2).all(|w| w[0] <= w[1]), "sealed entries stay sorted");
        self.directory = Directory::of(&self.sealed);
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
        let (Some(&(oldest, _)), Some(&(newest, _))) = (self.segments.front(), self.segments.back()) else {
            return 0;
        };
        let span = (newest - oldest) as u64;
        let before = self.len();
        let keep = |entry: &u64| ((newest as u64).wrapping_sub(*entry) & SEGMENT_MASK) <= span;
        self.table.retain(|entry| keep(entry));
        self.sealed.retain(keep);
        self.sealed.shrink_to_fit();
        self.directory = Directory::of(&self.sealed);
        before - self.len()
    }
}

/// Where each run of sorted entries with the same top `bits` starts: `starts[b]` is the
/// first index whose value's top bits are >= `b` (`starts[2^bits]` = the length).
#[derive(Debug, Default)]
struct Directory {
    bits: u32,
    starts: Vec<u32>,
}

/// Entries per directory run, on average.
const ENTRIES_PER_RUN: usize = 32;

impl Directory {
    fn of(sorted: &[u64]) -> Directory {
        let bits = (sorted.len() / ENTRIES_PER_RUN).max(1).ilog2();
        let mut starts = vec![0_u32; (1 << bits) + 1];
        // Count each run, then turn the counts into starts.
        for &value in sorted {
            starts[Self::run(bits, value) + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        Directory { bits, starts }
    }

    fn run(bits: u32, value: u64) -> usize {
        if bits == 0 { 0 } else { (value >> (64 - bits)) as usize }
    }

    /// The first index of `sorted` (the slice this directory was made of) whose value is
    /// >= `target`.
    fn lower_bound(&self, sorted: &[u64], target: u64) -> usize {
        if self.starts.is_empty() {
            return 0;
        }
        let run = Self::run(self.bits, target);
        let (lo, hi) = (self.starts[run] as usize, self.starts[run + 1] as usize);
        lo + sorted[lo..hi].partition_point(|&e| e < target)
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
    fn the_directory_finds_what_a_plain_binary_search_finds() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for n in [0, 1, 2, 3, 31, 32, 64, 100, 10_000, 100_000] {
            let mut values: Vec<u64> = (0..n).map(|_| rng.random()).collect();
            values.extend(values.clone().iter().take(n / 10)); // duplicates
            values.sort_unstable();
            let mut targets: Vec<u64> = (0..500).map(|_| rng.random()).collect();
            targets.extend(values.iter().copied().take(200));
            targets.extend([0, 1, u64::MAX, u64::MAX - 1]);
            let directory = Directory::of(&values);
            for target in targets {
                assert_eq!(directory.lower_bound(&values, target), values.partition_point(|&v| v < target), "n {n} target {target}");
            }
        }
    }

    #[test]
    fn sealed_entries_are_still_found_and_expire() {
        let mut dedup = Dedup::new(1);
        let keys: Vec<Key> = (0..ACTIVE_ENTRIES_MAX + 10).map(|i| dedup.key("s", &format!("m-{i}"))).collect();
        for (i, key) in keys.iter().enumerate() {
            dedup.insert(*key, i as i64 + 1, 0);
            dedup.seal_if_full();
        }
        assert_eq!(dedup.sealed.len(), ACTIVE_ENTRIES_MAX);
        assert_eq!(dedup.len(), ACTIVE_ENTRIES_MAX + 10);
        for (i, key) in keys.iter().enumerate().step_by(997) {
            let segment = (i as i64 + 1) >> SEGMENT_SHIFT;
            assert!(dedup.candidates(*key).contains(&(segment << SEGMENT_SHIFT, ((segment + 1) << SEGMENT_SHIFT) - 1)), "entry {i}");
        }
        assert!(dedup.candidates(dedup.key("s", "never")).is_empty());
        let day = 86_400_000;
        let late = dedup.key("s", "late");
        dedup.insert(late, ACTIVE_ENTRIES_MAX as i64 + 8192, 3 * day);
        let dropped = dedup.expire(3 * day);
        assert!(dropped > 0 && dedup.candidates(keys[0]).is_empty(), "old sealed entries expire");
        assert!(!dedup.candidates(keys[keys.len() - 1]).is_empty(), "the segment just before the window's start is kept");
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
        assert_eq!(dedup.expire(2 * day), 0, "segment 1 began before the cutoff: keep segment 0");
        assert_eq!(dedup.expire(3 * day + 1), 1, "all of segment 0 is older than the window");
        assert!(dedup.candidates(old).is_empty());
        assert_eq!(dedup.candidates(new), vec![(4096, 8191)]);
    }
}
