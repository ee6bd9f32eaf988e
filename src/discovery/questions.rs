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

/// Where a question stands after an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// This host answered HAVE first: the question is closed.
    Found(u64),
    /// Every peer of the wave said no or left: the question is closed; `Rest` says who else
    /// may be asked (the core opens the next wave under the same id, or answers nobody).
    WaveOver(Rest),
    /// Still waiting for others of the wave.
    Waiting,
}

/// What is left of a question whose wave is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rest {
    pub id: QuestionId,
    pub name: String,
    pub expected: Option<Expected>,
    /// Candidates not asked yet, best first.
    pub later: Vec<u64>,
}

#[derive(Debug)]
struct Question {
    name: String,
    expected: Option<Expected>,
    asked_at: Instant,
    deadline: Instant,
    /// When to send the WHO_HAS again to peers still pending; `None` once done.
    resend_at: Option<Instant>,
    /// Peers of this wave that have not answered.
    pending: Vec<u64>,
    /// Candidates for the next waves.
    later: Vec<u64>,
}

impl Question {
    fn rest(self, id: QuestionId) -> Rest {
        Rest {
            id,
            name: self.name,
            expected: self.expected,
            later: self.later,
        }
    }
}

/// A question whose WHO_HAS is to be sent again to the listed peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resend {
    pub id: QuestionId,
    pub name: String,
    pub expected: Option<Expected>,
    pub pending: Vec<u64>,
}

/// A wave whose deadline passed: the peers that stayed silent, and what is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub silent: Vec<u64>,
    pub rest: Rest,
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

    /// Open (or re-open, for its next wave) question `id` about `name`: `wave` (not empty) is
    /// asked at `now` and waited for until `now + timeout`, `later` is kept for the next
    /// waves. The caller checks `is_full` first for a new question; a full set refuses it.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        &mut self,
        id: QuestionId,
        name: &str,
        expected: Option<Expected>,
        wave: Vec<u64>,
        later: Vec<u64>,
        now: Instant,
        timeout: Duration,
    ) -> bool {
        if (self.is_full() && !self.open.contains_key(&id)) || wave.is_empty() {
            return false;
        }
        self.open.insert(
            id,
            Question {
                name: name.to_owned(),
                expected,
                asked_at: now,
                deadline: now + timeout,
                resend_at: Some(now + timeout / 2),
                pending: wave,
                later,
            },
        );
        true
    }

    /// An answer from `host` to question `id` at `now`. `None` when it is dropped (question
    /// not open, host not asked in this wave or already answered). With it comes the answer
    /// time when it is a clean sample (the question was not sent twice).
    pub fn answer(
        &mut self,
        id: QuestionId,
        host: u64,
        have: bool,
        now: Instant,
    ) -> Option<(Progress, Option<Duration>)> {
        let q = self.open.get_mut(&id)?;
        let i = q.pending.iter().position(|&h| h == host)?;
        let sample = q
            .resend_at
            .is_some()
            .then(|| now.saturating_duration_since(q.asked_at));
        if have {
            self.open.remove(&id);
            return Some((Progress::Found(host), sample));
        }
        q.pending.swap_remove(i);
        if q.pending.is_empty() {
            let q = self.open.remove(&id)?;
            return Some((Progress::WaveOver(q.rest(id)), sample));
        }
        Some((Progress::Waiting, sample))
    }

    /// `host` left the table: stop waiting for it and never ask it. Questions whose wave is
    /// left with nobody to wait for are closed and appended to `over`.
    pub fn forget_peer(&mut self, host: u64, over: &mut Vec<Rest>) {
        let ids: Vec<QuestionId> = self
            .open
            .iter_mut()
            .filter_map(|(&id, q)| {
                q.later.retain(|&h| h != host);
                let before = q.pending.len();
                q.pending.retain(|&h| h != host);
                (before > 0 && q.pending.is_empty()).then_some(id)
            })
            .collect();
        for id in ids {
            if let Some(q) = self.open.remove(&id) {
                over.push(q.rest(id));
            }
        }
    }

    /// Close `id` without an outcome. Returns whether it was open.
    pub fn cancel(&mut self, id: QuestionId) -> bool {
        self.open.remove(&id).is_some()
    }

    /// Close the waves whose deadline is reached (appended to `expired`) and collect those
    /// due for their one re-send.
    pub fn expire(&mut self, now: Instant, expired: &mut Vec<Expired>, resend: &mut Vec<Resend>) {
        let due: Vec<QuestionId> = self
            .open
            .iter()
            .filter(|(_, q)| now >= q.deadline)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            if let Some(mut q) = self.open.remove(&id) {
                let silent = std::mem::take(&mut q.pending);
                expired.push(Expired {
                    silent,
                    rest: q.rest(id),
                });
            }
        }
        for (&id, q) in &mut self.open {
            if q.resend_at.is_some_and(|at| now >= at) {
                q.resend_at = None;
                resend.push(Resend {
                    id,
                    name: q.name.clone(),
                    expected: q.expected,
                    pending: q.pending.clone(),
                });
            }
        }
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

    fn rest(id: QuestionId, later: Vec<u64>) -> Rest {
        Rest {
            id,
            name: "f".into(),
            expected: None,
            later,
        }
    }

    #[test]
    fn first_have_wins_and_late_answers_drop() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(3);
        let mut q = OpenQuestions::new(10);
        let id = q.allocate();
        assert_eq!(id, QuestionId(10));
        assert!(q.open(id, "f", None, vec![1, 2, 3], vec![4], t0, T));
        assert_eq!(
            q.answer(id, 2, false, t1),
            Some((Progress::Waiting, Some(Duration::from_millis(3))))
        );
        assert_eq!(q.answer(id, 2, true, t1), None, "already answered no");
        assert_eq!(q.answer(id, 9, true, t1), None, "not asked");
        assert_eq!(q.answer(id, 4, true, t1), None, "not in this wave");
        assert_eq!(q.answer(QuestionId(11), 1, true, t1), None, "not open");
        assert_eq!(
            q.answer(id, 3, true, t1).map(|a| a.0),
            Some(Progress::Found(3))
        );
        assert_eq!(q.answer(id, 1, true, t1), None, "closed");
        assert!(q.is_empty());
    }

    #[test]
    fn all_no_ends_the_wave_with_the_rest() {
        let t0 = Instant::now();
        let mut q = OpenQuestions::new(0);
        let id = q.allocate();
        q.open(id, "f", None, vec![1, 2], vec![3, 4], t0, T);
        assert_eq!(q.answer(id, 1, false, t0).unwrap().0, Progress::Waiting);
        assert_eq!(
            q.answer(id, 2, false, t0).unwrap().0,
            Progress::WaveOver(rest(id, vec![3, 4]))
        );
        assert!(q.is_empty());
        // The next wave re-opens the same id.
        assert!(q.open(id, "f", None, vec![3], vec![], t0, T));
        assert!(q.is_open(id));
    }

    #[test]
    fn resend_once_then_deadline_names_the_silent() {
        let t0 = Instant::now();
        let mut q = OpenQuestions::new(0);
        let id = q.allocate();
        q.open(id, "f", None, vec![1, 2], vec![7], t0, T);
        q.answer(id, 1, false, t0);
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
        // An answer after the re-send is no clean sample.
        re.clear();
        q.expire(t0 + T - Duration::from_millis(1), &mut out, &mut re);
        assert!(out.is_empty() && re.is_empty(), "only one re-send");
        q.expire(t0 + T, &mut out, &mut re);
        assert_eq!(
            out,
            vec![Expired {
                silent: vec![2],
                rest: rest(id, vec![7])
            }]
        );
        assert!(q.is_empty());
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn answers_after_the_resend_are_not_samples() {
        let t0 = Instant::now();
        let mut q = OpenQuestions::new(0);
        let id = q.allocate();
        q.open(id, "f", None, vec![1], vec![], t0, T);
        let (mut out, mut re) = (Vec::new(), Vec::new());
        q.expire(t0 + T / 2, &mut out, &mut re);
        assert_eq!(re.len(), 1);
        assert_eq!(
            q.answer(id, 1, true, t0 + T / 2 + Duration::from_millis(1)),
            Some((Progress::Found(1), None))
        );
    }

    #[test]
    fn forgetting_a_peer_drops_it_from_waves_and_later() {
        let t0 = Instant::now();
        let mut q = OpenQuestions::new(0);
        let a = q.allocate();
        let b = q.allocate();
        q.open(a, "f", None, vec![1], vec![1, 5], t0, T);
        q.open(b, "g", None, vec![1, 2], vec![], t0, T);
        let mut over = Vec::new();
        q.forget_peer(1, &mut over);
        assert_eq!(over, vec![rest(a, vec![5])]);
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
        q.open(a, "f", None, vec![1], vec![], t0, T);
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
            assert!(q.open(id, "f", None, vec![1], vec![], t0, T));
        }
        assert!(q.is_full());
        let id = q.allocate();
        assert!(!q.open(id, "f", None, vec![1], vec![], t0, T));
        assert_eq!(q.len(), MAX_OPEN_QUESTIONS);
        let mut empty = OpenQuestions::new(0);
        assert!(
            !empty.open(QuestionId(1), "f", None, Vec::new(), vec![2], t0, T),
            "nobody to ask"
        );
    }
}
