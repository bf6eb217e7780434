//! The budget queue: requests wait here until the batcher takes them.
//!
//! A request has a cost in budget units (rows for tabular models, tokens for text models, as
//! TEI budgets tokens) and a number of items (rows or texts). A batch is capped by both.
//! A plain struct (no channels, no threads) so its logic is tested directly, as in TGI's
//! router queue.

use std::collections::VecDeque;
use std::time::Instant;

/// One queued request.
#[derive(Debug)]
pub struct Entry<T> {
    /// Budget units (rows or tokens) this request contributes to a batch.
    pub cost: usize,
    /// Items (rows or texts) it contributes.
    pub items: usize,
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

/// A FIFO of requests counted in budget units.
#[derive(Debug)]
pub struct BudgetQueue<T> {
    entries: VecDeque<Entry<T>>,
    cost: usize,
}

impl<T> Default for BudgetQueue<T> {
    fn default() -> Self {
        Self {
            entries: VecDeque::new(),
            cost: 0,
        }
    }
}

impl<T: Cancellable> BudgetQueue<T> {
    /// Appends a request.
    pub fn push(&mut self, entry: Entry<T>) {
        self.cost += entry.cost;
        self.entries.push_back(entry);
    }

    /// Budget units waiting.
    pub fn cost(&self) -> usize {
        self.cost
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
        self.cost = self.entries.iter().map(|e| e.cost).sum();
        before - self.entries.len()
    }

    /// Takes the next batch: requests in arrival order while their cost fits in `max_cost`
    /// and their items in `max_items`, and always at least one (a request over either limit
    /// runs as a batch of its own). Cancelled requests are dropped on the way.
    pub fn next_batch(&mut self, max_cost: usize, max_items: usize) -> Vec<Entry<T>> {
        let mut batch = Vec::new();
        let (mut cost, mut items) = (0usize, 0usize);
        while let Some(front) = self.entries.front() {
            if front.item.is_cancelled() {
                if let Some(e) = self.entries.pop_front() {
                    self.cost -= e.cost;
                }
                continue;
            }
            if !batch.is_empty()
                && (cost + front.cost > max_cost || items + front.items > max_items)
            {
                break;
            }
            let Some(e) = self.entries.pop_front() else {
                break;
            };
            self.cost -= e.cost;
            cost += e.cost;
            items += e.items;
            batch.push(e);
            if cost >= max_cost || items >= max_items {
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
            cost: rows,
            items: rows,
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
        let mut q = BudgetQueue::default();
        q.push(entry(1, 3));
        q.push(entry(2, 4));
        q.push(entry(3, 2));
        assert_eq!(q.cost(), 9);
        assert_eq!(ids(&q.next_batch(8, usize::MAX)), vec![1, 2]);
        assert_eq!(q.cost(), 2);
        assert_eq!(ids(&q.next_batch(8, usize::MAX)), vec![3]);
        assert!(q.is_empty());
        assert!(q.next_batch(8, usize::MAX).is_empty());
    }

    #[test]
    fn an_oversized_request_runs_alone() {
        let mut q = BudgetQueue::default();
        q.push(entry(1, 100));
        q.push(entry(2, 1));
        assert_eq!(ids(&q.next_batch(8, usize::MAX)), vec![1]);
        assert_eq!(ids(&q.next_batch(8, usize::MAX)), vec![2]);
    }

    #[test]
    fn cancelled_requests_are_dropped() {
        let mut q = BudgetQueue::default();
        q.push(entry(1, 1));
        q.push(entry(2, 1));
        q.push(entry(3, 1));
        q.entries[0].item.cancelled.set(true);
        q.entries[2].item.cancelled.set(true);
        assert_eq!(ids(&q.next_batch(8, usize::MAX)), vec![2]);
        assert_eq!(q.cost(), 0);
        q.push(entry(4, 5));
        q.push(entry(5, 2));
        q.entries[0].item.cancelled.set(true);
        assert_eq!(q.prune_cancelled(), 1);
        assert_eq!(q.cost(), 2);
    }

    #[test]
    fn token_budget_and_item_limit_both_cap_a_batch() {
        let mut q = BudgetQueue::default();
        for (id, tokens) in [(1, 100), (2, 300), (3, 50), (4, 10), (5, 10)] {
            q.push(Entry {
                cost: tokens,
                items: 1,
                enqueued: Instant::now(),
                item: Item {
                    id,
                    cancelled: Cell::new(false),
                },
            });
        }
        // 100 + 300 tokens exceed a 350-token budget: the first runs alone.
        assert_eq!(ids(&q.next_batch(350, 8)), vec![1]);
        assert_eq!(ids(&q.next_batch(350, 8)), vec![2, 3]);
        // Two texts at most per batch.
        assert_eq!(ids(&q.next_batch(10_000, 2)), vec![4, 5]);
        assert_eq!(q.cost(), 0);
    }

    #[test]
    fn oldest_is_the_front() {
        let mut q = BudgetQueue::default();
        assert!(q.oldest().is_none());
        let e = entry(1, 1);
        let t = e.enqueued;
        q.push(e);
        q.push(entry(2, 1));
        assert_eq!(q.oldest(), Some(t));
    }
}
