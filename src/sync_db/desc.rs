//! One sync database entry's `desc` text, parsed: the package file's name (`%FILENAME%`), its
//! size (`%CSIZE%`) and its SHA-256 (`%SHA256SUM%`). Pure: bytes in, a borrowed [`DescEntry`]
//! or a small [`DescError`] out. It does not know where the text came from (the tar walker and
//! the loader do) and keeps nothing; every other field of `desc` is skipped.

use std::fmt;

use super::Sha256;
use crate::cache::{self, FileKind};

/// What flocon needs from one `desc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DescEntry<'a> {
    /// `%FILENAME%`: a package file name (`cache::classify` says `Package`).
    pub file_name: &'a str,
    /// `%CSIZE%`: the package file's size in bytes.
    pub size: u64,
    /// `%SHA256SUM%`, or `None` when the entry has none (old databases, hand-made ones).
    pub sha256: Option<Sha256>,
}

/// Why a `desc` gave no entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescError {
    /// No `%FILENAME%` value.
    NoFileName,
    /// `%FILENAME%` is not UTF-8 or not a package file name (a path, a `.sig`, ...).
    BadFileName,
    /// No `%CSIZE%` value.
    NoSize,
    /// `%CSIZE%` is not a decimal number that fits in 64 bits.
    BadSize,
    /// `%SHA256SUM%` is present but not 64 hexadecimal digits.
    BadHash,
}

impl fmt::Display for DescError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DescError::NoFileName => "no %FILENAME%",
            DescError::BadFileName => "%FILENAME% is not a package file name",
            DescError::NoSize => "no %CSIZE%",
            DescError::BadSize => "%CSIZE% is not a number",
            DescError::BadHash => "%SHA256SUM% is not 64 hex digits",
        })
    }
}

/// Parses a `desc` file: blocks of a `%KEY%` line followed by value lines up to an empty line.
/// The first value of each wanted key counts; a key repeated later is ignored. Lines end with
/// `\n` (a `\r` before it is dropped).
pub fn parse_desc(text: &[u8]) -> Result<DescEntry<'_>, DescError> {
    let mut file_name: Option<&[u8]> = None;
    let mut size: Option<&[u8]> = None;
    let mut sha256: Option<&[u8]> = None;
    let mut key: Option<&[u8]> = None;
    for raw in text.split(|&b| b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            key = None;
            continue;
        }
        let Some(current) = key else {
            if line.len() > 2 && line.starts_with(b"%") && line.ends_with(b"%") {
                key = Some(line);
            }
            continue;
        };
        let slot = match current {
            b"%FILENAME%" => &mut file_name,
            b"%CSIZE%" => &mut size,
            b"%SHA256SUM%" => &mut sha256,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(line);
        }
    }
    let file_name = file_name.ok_or(DescError::NoFileName)?;
    let file_name = std::str::from_utf8(file_name).map_err(|_| DescError::BadFileName)?;
    if cache::classify(file_name) != Ok(FileKind::Package) {
        return Err(DescError::BadFileName);
    }
    let size = parse_decimal(size.ok_or(DescError::NoSize)?).ok_or(DescError::BadSize)?;
    let sha256 = match sha256 {
        None => None,
        Some(hex) => Some(Sha256::from_hex(hex).ok_or(DescError::BadHash)?),
    };
    Ok(DescEntry {
        file_name,
        size,
        sha256,
    })
}

/// Digits only, 1 to 20 of them, no overflow.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if d.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "4f6b0f1c5b3f7bd2b0e8a4c9a8d1c0e2f3a4b5c6d7e8f90123456789abcdef01";

    fn desc(file_name: &str, size: &str, hash: Option<&str>) -> String {
        let mut text = format!(
            "%FILENAME%\n{file_name}\n\n%NAME%\nfoo\n\n%VERSION%\n1.0-1\n\n%CSIZE%\n{size}\n\n\
             %ISIZE%\n99\n\n%MD5SUM%\n0123456789abcdef0123456789abcdef\n\n"
        );
        if let Some(hash) = hash {
            text.push_str(&format!("%SHA256SUM%\n{hash}\n\n"));
        }
        text.push_str("%DEPENDS%\nglibc\nbash\n\n");
        text
    }

    #[test]
    fn repo_add_entry() {
        let text = desc("foo-1.0-1-x86_64.pkg.tar.zst", "12345", Some(HASH));
        let entry = parse_desc(text.as_bytes()).unwrap();
        assert_eq!(entry.file_name, "foo-1.0-1-x86_64.pkg.tar.zst");
        assert_eq!(entry.size, 12345);
        assert_eq!(entry.sha256.unwrap().to_string(), HASH);
    }

    #[test]
    fn epoch_plus_and_crlf() {
        let text = desc(
            "g++-1:2.0+r3-1-any.pkg.tar.xz",
            "0",
            Some(&HASH.to_uppercase()),
        )
        .replace('\n', "\r\n");
        let entry = parse_desc(text.as_bytes()).unwrap();
        assert_eq!(entry.file_name, "g++-1:2.0+r3-1-any.pkg.tar.xz");
        assert_eq!(entry.size, 0);
        assert_eq!(entry.sha256.unwrap().to_string(), HASH);
    }

    #[test]
    fn entry_without_hash_has_none() {
        let text = desc("foo-1.0-1-x86_64.pkg.tar.zst", "7", None);
        assert_eq!(parse_desc(text.as_bytes()).unwrap().sha256, None);
    }

    #[test]
    fn first_value_wins() {
        let text = "%FILENAME%\na-1-1-any.pkg.tar.zst\nb-1-1-any.pkg.tar.zst\n\n%CSIZE%\n5\n\n\
             %FILENAME%\nc-1-1-any.pkg.tar.zst\n\n%CSIZE%\n6\n\n";
        let entry = parse_desc(text.as_bytes()).unwrap();
        assert_eq!((entry.file_name, entry.size), ("a-1-1-any.pkg.tar.zst", 5));
    }

    #[test]
    fn errors() {
        let good = "foo-1.0-1-x86_64.pkg.tar.zst";
        let cases: &[(&str, DescError)] = &[
            ("", DescError::NoFileName),
            ("%CSIZE%\n5\n", DescError::NoFileName),
            ("%FILENAME%\n\n%CSIZE%\n5\n", DescError::NoFileName),
            (
                "%FILENAME%\n../etc/passwd\n\n%CSIZE%\n5\n",
                DescError::BadFileName,
            ),
            (
                "%FILENAME%\nfoo-1.0-1-x86_64.pkg.tar.zst.sig\n\n%CSIZE%\n5\n",
                DescError::BadFileName,
            ),
            ("%FILENAME%\nfoo.db\n\n%CSIZE%\n5\n", DescError::BadFileName),
        ];
        for (text, want) in cases {
            assert_eq!(parse_desc(text.as_bytes()), Err(*want), "{text:?}");
        }
        let bad_name = b"%FILENAME%\nfoo-\xff-1-any.pkg.tar.zst\n\n%CSIZE%\n5\n";
        assert_eq!(parse_desc(bad_name), Err(DescError::BadFileName));
        for size in ["", "-1", "1e3", " 5", "18446744073709551616", "0x10"] {
            let text = desc(good, size, Some(HASH));
            let want = if size.is_empty() {
                DescError::NoSize
            } else {
                DescError::BadSize
            };
            assert_eq!(parse_desc(text.as_bytes()), Err(want), "{size:?}");
        }
        let max = desc(good, "18446744073709551615", None);
        assert_eq!(parse_desc(max.as_bytes()).unwrap().size, u64::MAX);
        for hash in [
            &HASH[1..],
            "zz",
            &format!("{HASH}0"),
            &HASH.replace('4', "g"),
        ] {
            let text = desc(good, "5", Some(hash));
            assert_eq!(
                parse_desc(text.as_bytes()),
                Err(DescError::BadHash),
                "{hash}"
            );
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x1234_5678_u32;
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    b"%\n\rFILENAMECSIZE0123456789abcdef.-"[(state % 33) as usize]
                })
                .collect();
            let _ = parse_desc(&bytes);
        }
    }
}
