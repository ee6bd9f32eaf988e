//! Open "who has file X" questions: which peers were asked, who has not answered yet, when to
//! ask the silent ones again and when to give up.
//!
//! Pure and bounded (`MAX_OPEN_QUESTIONS`, and each question lists at most the peers of the
//! table). It knows host ids only; the protocol core turns outcomes into events and datagrams.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::wire::Expected;

/// Most questions open at once; past that `ask` answers "nobody" at once.
pub const MAX_OPEN_QUESTIONS: usize = 4096;

/// Names one `ask`; its answer carries the same id. Ids are 32-bit on the wire and start at a
/// random value each run, so answers to a previous run's questions are not mistaken for ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QuestionId(pub u32);

/// How a question ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This host answered HAVE first.
    Found(u64),
    /// Every asked peer said no or left, or the deadline passed.
    Nobody,
}

#[derive(Debug)]
struct Question {
    name: String,
    expected: Option<Expected>,
    deadline: Instant,
    /// When to send the WHO_HAS again to peers still pending; `None` once done.
    resend_at: Option<Instant>,
    /// Asked peers that have not answered.
    pending: Vec<u64>,
}

/// A question whose WHO_HAS is to be sent again to the listed peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resend {
    pub id: QuestionId,
    pub name: String,
    pub expected: Option<Expected>,
    pub pending: Vec<u64>,
}

/// The bounded set of open questions.
#[derive(Debug)]
pub struct OpenQuestions {
    open: BTreeMap<QuestionId, Question>,
    next_id: u32,
}

impl OpenQuestions {
    /// An empty set whose first id is `first_id`.
    pub fn new(first_id: u32) -> Self {
        OpenQuestions {
            open: BTreeMap::new(),
            next_id: first_id,
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.open.len() >= MAX_OPEN_QUESTIONS
    }

    #[cfg(test)]
    pub fn is_open(&self, id: QuestionId) -> bool {
        self.open.contains_key(&id)
    }

    /// A fresh id that is not open (ids wrap around after 2^32).
    pub fn allocate(&mut self) -> QuestionId {
        // At most MAX_OPEN_QUESTIONS ids are taken, so this ends within that many steps.
        loop {
            let id = QuestionId(self.next_id);
            self.next_id = self.next_id.wrapping_add(1);
            if !self.open.contains_key(&id) {
                return id;
            }
        }
    }

    /// Open question `id` about `name`, asked of `pending` (not empty) at `now`. The caller
    /// checks `is_full` first; a full set refuses the question and returns false.
    pub fn open(
        &mut self,
        id: QuestionId,
        name: &str,
        expected: Option<Expected>,
        pending: Vec<u64>,
        now: Instant,
        timeout: Duration,
    ) -> bool {
        if self.is_full() || pending.is_empty() {
            return false;
        }
        self.open.insert(
            id,
            Question {
                name: name.to_owned(),
                expected,
                deadline: now + timeout,
                resend_at: Some(now + timeout / 2),
                pending,
            },
        );
        true
    }

    /// An answer from `host` to question `id`. `Some` when it closes the question; `None` when
    /// the question stays open or the answer is dropped (question not open, host not asked or
    /// already answered).
    pub fn answer(&mut self, id: QuestionId, host: u64, have: bool) -> Option<Outcome> {
        let q = self.open.get_mut(&id)?;
        let i = q.pending.iter().position(|&h| h == host)?;
        if have {
            self.open.remove(&id);
            return Some(Outcome::Found(host));
        }
        q.pending.swap_remove(i);
        if q.pending.is_empty() {
            self.open.remove(&id);
            return Some(Outcome::Nobody);
        }
        None
    }

    /// `host` left the table: stop waiting for it. Questions left with nobody to wait for are
    /// closed and appended to `closed` (their outcome is `Nobody`).
    pub fn forget_peer(&mut self, host: u64, closed: &mut Vec<QuestionId>) {
        self.open.retain(|&id, q| {
            q.pending.retain(|&h| h != host);
            if q.pending.is_empty() {
                closed.push(id);
                false
            } else {
                true
            }
        });
    }

    /// Close `id` without an outcome. Returns whether it was open.
    pub fn cancel(&mut self, id: QuestionId) -> bool {
        self.open.remove(&id).is_some()
    }

    /// Close the questions whose deadline is reached (appended to `timed_out`, outcome
    /// `Nobody`) and collect those due for their one re-send.
    pub fn expire(
        &mut self,
        now: Instant,
        timed_out: &mut Vec<QuestionId>,
        resend: &mut Vec<Resend>,
    ) {
        self.open.retain(|&id, q| {
            if now >= q.deadline {
                timed_out.push(id);
                return false;
            }
            if q.resend_at.is_some_and(|at| now >= at) {
                q.resend_at = None;
                resend.push(Resend {
                    id,
                    name: q.name.clone(),
                    expected: q.expected,
                    pending: q.pending.clone(),
                });
            }
            true
        });
    }

    /// The earliest re-send time or deadline of the open questions.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open
            .values()
            .map(|q| q.resend_at.unwrap_or(q.deadline).min(q.deadline))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(250);

    #[test]
    fn first_have_wins_and_late_answers_drop() {
        let t0 = Instant::now();
        let mut q = OpenQuestions::new(10);
        let id = q.allocate();
        assert_eq!(id, QuestionId(10));
        assert!(q.open(id, "f", None, vec![1, 2, 3], t0, T));
        assert_eq!(q.answer(id, 2, false), None);
        assert_eq!(q.answer(id, 2, true), None, "already answered no");
        assert_eq!(q.answer(id, 9, true), None, "not asked");
        assert_eq!(q.answer(QuestionId(11), 1, true), None, "not open");
        assert_eq!(q.answer(id, 3, true), Some(Outcome::Found(3)));
        assert_eq!(q.answer(id, 1, true), None, "closed");
        assert!(q.is_empty());
    }

    #[test]
    fn all_no_is_nobody() {
        let t0 = Instant::now();
        let mut q = OpenQuestions::new(0);
        let id = q.allocate();
        q.open(id, "f", None, vec![1, 2], t0, T);
        assert_eq!(q.answer(id, 1, false), None);
        assert_eq!(q.answer(id, 2, false), Some(Outcome::Nobody));
    }

    #[test]
    fn resend_once_then_deadline() {
        let t0 = Instant::now();
        let mut q = OpenQuestions::new(0);
        let id = q.allocate();
        q.open(id, "f", None, vec![1, 2], t0, T);
        q.answer(id, 1, false);
        assert_eq!(q.next_deadline(), Some(t0 + T / 2));
        let (mut out, mut re) = (Vec::new(), Vec::new());
        q.expire(t0 + T / 2 - Duration::from_millis(1), &mut out, &mut re);
        assert!(out.is_empty() && re.is_empty());
        q.expire(t0 + T / 2, &mut out, &mut re);
        assert_eq!(
            re,
            vec![Resend {
                id,
                name: "f".into(),
                expected: None,
                pending: vec![2]
            }]
        );
        assert_eq!(q.next_deadline(), Some(t0 + T));
        re.clear();
        q.expire(t0 + T - Duration::from_millis(1), &mut out, &mut re);
        assert!(out.is_empty() && re.is_empty(), "only one re-send");
        q.expire(t0 + T, &mut out, &mut re);
        assert_eq!(out, vec![id]);
        assert!(q.is_empty());
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn forgetting_the_last_pending_peer_closes() {
        let t0 = Instant::now();
        let mut q = OpenQuestions::new(0);
        let a = q.allocate();
        let b = q.allocate();
        q.open(a, "f", None, vec![1], t0, T);
        q.open(b, "g", None, vec![1, 2], t0, T);
        let mut closed = Vec::new();
        q.forget_peer(1, &mut closed);
        assert_eq!(closed, vec![a]);
        assert!(q.is_open(b));
        assert!(q.cancel(b));
        assert!(!q.cancel(b));
    }

    #[test]
    fn ids_wrap_and_skip_open_ones() {
        let t0 = Instant::now();
        let mut q = OpenQuestions::new(u32::MAX);
        let a = q.allocate();
        assert_eq!(a, QuestionId(u32::MAX));
        q.open(a, "f", None, vec![1], t0, T);
        assert_eq!(q.allocate(), QuestionId(0));
        // Force a collision: the counter comes round to an open id.
        q.next_id = u32::MAX;
        assert_eq!(q.allocate(), QuestionId(0));
    }

    #[test]
    fn bounded() {
        let t0 = Instant::now();
        let mut q = OpenQuestions::new(0);
        for _ in 0..MAX_OPEN_QUESTIONS {
            let id = q.allocate();
            assert!(q.open(id, "f", None, vec![1], t0, T));
        }
        assert!(q.is_full());
        let id = q.allocate();
        assert!(!q.open(id, "f", None, vec![1], t0, T));
        assert_eq!(q.len(), MAX_OPEN_QUESTIONS);
        let mut empty = OpenQuestions::new(0);
        assert!(
            !empty.open(QuestionId(1), "f", None, Vec::new(), t0, T),
            "nobody to ask"
        );
    }
}
