//! The sync database reader on arbitrary bytes: the first byte picks a budget, the rest is
//! the database file. A one-shot load and a budgeted one (`poll_load(budget)` until done)
//! never panic; when both succeed they give the same index; every indexed name is a package
//! file name and the caps hold.
#![no_main]
use flocon::cache::{self, FileKind};
use flocon::sync_db::{DbLoader, MAX_ENTRIES, Progress, SyncIndex};
use libfuzzer_sys::fuzz_target;

fn sorted(index: &SyncIndex) -> Vec<(String, u64, Option<[u8; 32]>)> {
    let mut all: Vec<_> = index
        .iter()
        .map(|(name, id)| (name.to_owned(), id.size, id.sha256.map(|h| h.0)))
        .collect();
    all.sort();
    all
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, file)) = data.split_first() else {
        return;
    };
    let budget = usize::from(pick) * 37 + 1;
    let whole = DbLoader::new(file).load_all();
    let mut loader = DbLoader::new(file);
    let budgeted = loop {
        match loader.poll_load(budget) {
            Progress::More => {}
            Progress::Done(index) => break Ok(index),
            Progress::Failed(e) => break Err(e),
        }
    };
    if let (Ok(whole), Ok(budgeted)) = (&whole, &budgeted) {
        let entries = sorted(whole);
        assert_eq!(entries, sorted(budgeted));
        assert!(entries.len() <= MAX_ENTRIES);
        for (name, _, _) in &entries {
            assert_eq!(cache::classify(name), Ok(FileKind::Package), "{name:?}");
            assert!(whole.lookup(&format!("{name}.sig")).is_none());
        }
    }
    if let Err(e) = whole {
        assert!(!e.to_string().contains('\n'));
    }
});
