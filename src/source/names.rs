//! File-name surgery on `OsStr`: checkpoints are named by their authors, and a name that is not
//! UTF-8 must resolve like any other. Every cut is made at an ASCII suffix or marker, which the
//! `OsStr` encoding allows (`OsStr::from_encoded_bytes_unchecked`: a split next to a valid UTF-8
//! substring).

use std::ffi::OsStr;
use std::path::Path;

/// The last component of `path`, or an empty name.
pub fn file_name(path: &Path) -> &OsStr {
    path.file_name().unwrap_or_default()
}

fn from_bytes(b: &[u8]) -> &OsStr {
    // SAFETY: `b` is a prefix of an `OsStr`'s encoded bytes that ends where an ASCII (so valid
    // UTF-8) substring of it begins, the case the function's contract allows.
    unsafe { OsStr::from_encoded_bytes_unchecked(b) }
}

/// `name` without the ASCII `suffix`.
pub fn strip_suffix<'a>(name: &'a OsStr, suffix: &str) -> Option<&'a OsStr> {
    name.as_encoded_bytes().strip_suffix(suffix.as_bytes()).map(from_bytes)
}

pub fn ends_with(name: &OsStr, suffix: &str) -> bool {
    name.as_encoded_bytes().ends_with(suffix.as_bytes())
}

/// The part of `name` before the last `marker`, and the ASCII text after it (`None` when the
/// text after it is not ASCII).
pub fn rsplit_once<'a>(name: &'a OsStr, marker: &str) -> Option<(&'a OsStr, &'a str)> {
    let b = name.as_encoded_bytes();
    let m = marker.as_bytes();
    let at = b.windows(m.len()).rposition(|w| w == m)?;
    let tail = &b[at + m.len()..];
    tail.is_ascii().then(|| (from_bytes(&b[..at]), std::str::from_utf8(tail).unwrap_or_default()))
}

/// `name` with the first `from` replaced by `to` (both ASCII).
pub fn replace_once(name: &OsStr, from: &str, to: &str) -> Option<std::ffi::OsString> {
    let b = name.as_encoded_bytes();
    let at = b.windows(from.len()).position(|w| w == from.as_bytes())?;
    let mut out = from_bytes(&b[..at]).to_os_string();
    out.push(to);
    // SAFETY: the rest starts right after the ASCII `from`, a split next to valid UTF-8.
    out.push(unsafe { OsStr::from_encoded_bytes_unchecked(&b[at + from.len()..]) });
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn names_that_are_not_utf8_are_cut_at_their_ascii_parts() {
        use std::os::unix::ffi::OsStrExt;
        let name = OsStr::from_bytes(b"m\xffo.ckpt-\xfe1.data-00000-of-00002");
        let (base, tail) = rsplit_once(name, ".data-").unwrap();
        assert_eq!(base.as_bytes(), b"m\xffo.ckpt-\xfe1");
        assert_eq!(tail, "00000-of-00002");
        assert_eq!(strip_suffix(OsStr::from_bytes(b"\xff.index"), ".index").unwrap().as_bytes(), b"\xff");
        assert!(strip_suffix(OsStr::from_bytes(b"\xff.indexx"), ".index").is_none());
        assert!(ends_with(OsStr::from_bytes(b"a\xfe.pth"), ".pth"));
        assert!(rsplit_once(OsStr::from_bytes(b"a.data-\xff"), ".data-").is_none());
        let r = replace_once(OsStr::from_bytes(b"\xfe-?????-of-00002"), "-?????-of-", "-00000-of-").unwrap();
        assert_eq!(r.as_bytes(), b"\xfe-00000-of-00002");
    }
}
