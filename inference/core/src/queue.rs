//! The row-budget queue: requests of one or more rows wait here until the batcher takes them.
//!
//! A plain struct (no channels, no threads) so its logic is tested directly, as in TGI's
//! router queue.

use std::collections::VecDeque;
use std::time::Instant;

/// One queued request.
#[derive(Debug)]
pub struct Entry<T> {
    /// Rows this request contributes to a batch.
    pub rows: usize,
    /// When it was queued.
    pub enqueued: Instant,
    /// The request's payload and reply channel.
    pub item: T,
}

/// Something whose caller may have gone away (a dropped reply channel).
pub trait Cancellable {
    /// True when nobody waits for the answer any more.
    fn is_cancelled(&self) -> bool;
}

/// A FIFO of requests counted in rows.
#[derive(Debug)]
pub struct RowQueue<T> {
    entries: VecDeque<Entry<T>>,
    rows: usize,
}

impl<T> Default for RowQueue<T> {
    fn default() -> Self {
        Self {
            entries: VecDeque::new(),
            rows: 0,
        }
    }
}

impl<T: Cancellable> RowQueue<T> {
    /// Appends a request.
    pub fn push(&mut self, entry: Entry<T>) {
        self.rows += entry.rows;
        self.entries.push_back(entry);
    }

    /// Rows waiting.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// When the oldest waiting request was queued.
    pub fn oldest(&self) -> Option<Instant> {
        self.entries.front().map(|e| e.enqueued)
    }

    /// Drops requests whose caller has gone; returns how many were dropped.
    pub fn prune_cancelled(&mut self) -> usize {
        let before = self.entries.len();
        self.entries.retain(|e| !e.item.is_cancelled());
        self.rows = self.entries.iter().map(|e| e.rows).sum();
        before - self.entries.len()
    }

    /// Takes the next batch: requests in arrival order while their rows fit in `max_rows`,
    /// and always at least one (a request larger than `max_rows` runs as a batch of its own).
    /// Cancelled requests are dropped on the way.
    pub fn next_batch(&mut self, max_rows: usize) -> Vec<Entry<T>> {
        let mut batch = Vec::new();
        let mut taken = 0usize;
        while let Some(front) = self.entries.front() {
            if front.item.is_cancelled() {
                if let Some(e) = self.entries.pop_front() {
                    self.rows -= e.rows;
                }
                continue;
            }
            if !batch.is_empty() && taken + front.rows > max_rows {
                break;
            }
            let Some(e) = self.entries.pop_front() else {
                break;
            };
            self.rows -= e.rows;
            taken += e.rows;
            batch.push(e);
            if taken >= max_rows {
                break;
            }
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[derive(Debug)]
    struct Item {
        id: u32,
        cancelled: Cell<bool>,
    }
    impl Cancellable for Item {
        fn is_cancelled(&self) -> bool {
            self.cancelled.get()
        }
    }

    fn entry(id: u32, rows: usize) -> Entry<Item> {
        Entry {
            rows,
            enqueued: Instant::now(),
            item: Item {
                id,
                cancelled: Cell::new(false),
            },
        }
    }

    fn ids(b: &[Entry<Item>]) -> Vec<u32> {
        b.iter().map(|e| e.item.id).collect()
    }

    #[test]
    fn batches_respect_the_row_budget_in_order() {
        let mut q = RowQueue::default();
        q.push(entry(1, 3));
        q.push(entry(2, 4));
        q.push(entry(3, 2));
        assert_eq!(q.rows(), 9);
        assert_eq!(ids(&q.next_batch(8)), vec![1, 2]);
        assert_eq!(q.rows(), 2);
        assert_eq!(ids(&q.next_batch(8)), vec![3]);
        assert!(q.is_empty());
        assert!(q.next_batch(8).is_empty());
    }

    #[test]
    fn an_oversized_request_runs_alone() {
        let mut q = RowQueue::default();
        q.push(entry(1, 100));
        q.push(entry(2, 1));
        assert_eq!(ids(&q.next_batch(8)), vec![1]);
        assert_eq!(ids(&q.next_batch(8)), vec![2]);
    }

    #[test]
    fn cancelled_requests_are_dropped() {
        let mut q = RowQueue::default();
        q.push(entry(1, 1));
        q.push(entry(2, 1));
        q.push(entry(3, 1));
        q.entries[0].item.cancelled.set(true);
        q.entries[2].item.cancelled.set(true);
        assert_eq!(ids(&q.next_batch(8)), vec![2]);
        assert_eq!(q.rows(), 0);
        q.push(entry(4, 5));
        q.push(entry(5, 2));
        q.entries[0].item.cancelled.set(true);
        assert_eq!(q.prune_cancelled(), 1);
        assert_eq!(q.rows(), 2);
    }

    #[test]
    fn oldest_is_the_front() {
        let mut q = RowQueue::default();
        assert!(q.oldest().is_none());
        let e = entry(1, 1);
        let t = e.enqueued;
        q.push(e);
        q.push(entry(2, 1));
        assert_eq!(q.oldest(), Some(t));
    }
}
