//! What this host is, as far as sharing files goes: its distribution id (from
//! os-release) and its machine architecture (from `uname`). The os-release parser is
//! pure; only `machine_architecture` asks the kernel. It does not decide which value wins
//! over a configured one (the loader in `mod.rs` does).

/// Longest distribution id or architecture name accepted.
const MAX_NAME_BYTES: usize = 64;

/// The `ID=` value of an os-release file (see os-release(5)): the last `ID=` line wins,
/// one level of single or double quotes is removed (with backslash escapes inside double
/// quotes). `None` if there is no such line or its value is not a valid id.
pub fn parse_os_release(text: &str) -> Option<String> {
    let mut id = None;
    for line in text.lines() {
        if let Some(value) = line.trim().strip_prefix("ID=") {
            id = unquote(value.trim());
        }
    }
    id.filter(|id| valid_distro(id))
}

fn unquote(value: &str) -> Option<String> {
    let Some(first) = value.chars().next() else {
        return Some(String::new());
    };
    if first != '"' && first != '\'' {
        return Some(value.to_owned());
    }
    let inner = value.strip_prefix(first)?.strip_suffix(first)?;
    if first == '\'' {
        return Some(inner.to_owned());
    }
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next()?);
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// A distribution id: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub(super) fn valid_distro(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_NAME_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// An architecture name (`x86_64`, `aarch64`, `armv7h`, `auto`, ...): 1 to 64 of
/// `A-Z a-z 0-9 _ -`.
pub(super) fn valid_architecture(arch: &str) -> bool {
    !arch.is_empty()
        && arch.len() <= MAX_NAME_BYTES
        && arch
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// The machine field of `uname(2)` (what pacman's `Architecture = auto` means), or the
/// architecture this program was built for if that fails.
pub fn machine_architecture() -> String {
    // SAFETY: `utsname` is a plain C struct of byte arrays, for which all zeroes is valid.
    let mut names: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `names` is a valid, writable `utsname` that outlives the call.
    let rc = unsafe { libc::uname(&mut names) };
    if rc == 0 {
        let machine: String = names
            .machine
            .iter()
            .map(|c| c.to_ne_bytes()[0])
            .take_while(|&b| b != 0)
            .map(char::from)
            .collect();
        if valid_architecture(&machine) {
            return machine;
        }
    }
    std::env::consts::ARCH.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_ids() {
        let cases: &[(&str, Option<&str>)] = &[
            ("NAME=\"Arch Linux\"\nID=arch\nID_LIKE=x\n", Some("arch")),
            ("ID=\"archarm\"\n", Some("archarm")),
            ("ID='manjaro-arm'\n", Some("manjaro-arm")),
            ("ID=\"a\\\"b\"\n", None),
            ("ID=\"unterminated\n", None),
            ("ID=\n", None),
            ("ID=\"\"\n", None),
            ("ID_LIKE=arch\n", None),
            ("# ID=commented\nID=endeavouros\n", Some("endeavouros")),
            ("ID=first\nID=second\n", Some("second")),
            ("  ID=spaced  \r\n", Some("spaced")),
            ("ID=has space\n", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_os_release(text).as_deref(), *want, "{text:?}");
        }
    }

    #[test]
    fn names() {
        assert!(valid_architecture("x86_64"));
        assert!(valid_architecture("auto"));
        assert!(!valid_architecture("x86 64"));
        assert!(!valid_architecture("../x"));
        assert!(!valid_architecture(""));
        assert!(valid_distro("arch"));
        assert!(!valid_distro("arch/linux"));
    }

    #[test]
    fn machine_is_a_valid_name() {
        assert!(valid_architecture(&machine_architecture()));
    }
}
