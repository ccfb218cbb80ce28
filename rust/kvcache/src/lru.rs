//! The evictable list: cached blocks that no sequence holds, least recently freed first.
//!
//! An intrusive doubly linked list over block ids (two `u32` arrays), so that taking a block back
//! off the list when a new prompt reuses it is O(1), as are push and evict — vLLM's free-block
//! queue has the same shape.

/// "No block": the end of the list. Block ids are therefore below `u32::MAX`.
const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LruList {
    prev: Vec<u32>,
    next: Vec<u32>,
    linked: Vec<bool>,
    head: u32,
    tail: u32,
    len: usize,
}

impl LruList {
    pub(crate) fn new(num_blocks: usize) -> Self {
        LruList {
            prev: vec![NIL; num_blocks],
            next: vec![NIL; num_blocks],
            linked: vec![false; num_blocks],
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn contains(&self, block: u32) -> bool {
        self.linked.get(block as usize).copied().unwrap_or(false)
    }

    /// Appends `block` as the most recently used; a block already on the list is left alone.
    pub(crate) fn push_back(&mut self, block: u32) {
        debug_assert!(!self.contains(block), "block {block} is already evictable");
        if self.contains(block) {
            return;
        }
        let b = block as usize;
        self.prev[b] = self.tail;
        self.next[b] = NIL;
        match self.tail {
            NIL => self.head = block,
            t => self.next[t as usize] = block,
        }
        self.tail = block;
        self.linked[b] = true;
        self.len += 1;
    }

    /// Takes the least recently used block off the list.
    pub(crate) fn pop_front(&mut self) -> Option<u32> {
        let head = self.head;
        (head != NIL && self.remove(head)).then_some(head)
    }

    /// Unlinks `block`; false if it was not on the list.
    pub(crate) fn remove(&mut self, block: u32) -> bool {
        if !self.contains(block) {
            return false;
        }
        let b = block as usize;
        let (p, n) = (self.prev[b], self.next[b]);
        match p {
            NIL => self.head = n,
            p => self.next[p as usize] = n,
        }
        match n {
            NIL => self.tail = p,
            n => self.prev[n as usize] = p,
        }
        self.prev[b] = NIL;
        self.next[b] = NIL;
        self.linked[b] = false;
        self.len -= 1;
        true
    }

    /// The blocks, least recently used first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let mut at = self.head;
        // Bounded by the array length, so a broken link cannot loop forever (the audit reports it).
        (0..self.next.len()).map_while(move |_| {
            let here = (at != NIL).then_some(at)?;
            at = self.next[here as usize];
            Some(here)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_push_remove_pop() {
        let mut l = LruList::new(5);
        for b in [3, 1, 4, 0] {
            l.push_back(b);
        }
        assert_eq!(l.iter().collect::<Vec<_>>(), [3, 1, 4, 0]);
        assert!(l.remove(4));
        assert!(!l.remove(4));
        assert!(!l.remove(2));
        assert_eq!(l.iter().collect::<Vec<_>>(), [3, 1, 0]);
        assert_eq!(l.pop_front(), Some(3));
        l.push_back(3);
        assert_eq!(l.iter().collect::<Vec<_>>(), [1, 0, 3]);
        assert!(l.remove(3));
        assert!(l.remove(1));
        assert_eq!(l.pop_front(), Some(0));
        assert_eq!(l.pop_front(), None);
        assert_eq!(l.len(), 0);
        l.push_back(2);
        assert_eq!(l.iter().collect::<Vec<_>>(), [2]);
    }
}
