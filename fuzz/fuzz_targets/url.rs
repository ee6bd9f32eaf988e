//! Upstream URLs: an accepted URL's `to_text()` parses back to the same `Url`, and so does
//! a file joined onto it; a `Location` resolved against it (the input after a NUL byte) is
//! either refused or a URL that parses.
#![no_main]
use flocon::http::url;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (base, location) = text.split_once('\0').unwrap_or((&text, "f"));
    let Some(u) = url::parse(base) else { return };
    assert_eq!(url::parse(&u.to_text()).as_ref(), Some(&u));
    let joined = u.join("zstd-1:1.5.6+x-1-x86_64.pkg.tar.zst");
    if joined.to_text().len() <= url::MAX_URL {
        assert_eq!(url::parse(&joined.to_text()), Some(joined));
    }
    if let Some(resolved) = u.resolve(location) {
        assert!(url::parse(&resolved).is_some(), "{resolved:?}");
    }
});
