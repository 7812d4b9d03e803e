//! Noticing that a file changed, whether it was rewritten in place or
//! replaced by a rename (editors and configuration tools do both): the
//! path is read again each time, and its modification time, length and a
//! hash of its content are compared.

use std::path::Path;

/// Modification time, length and a hash of the content.
pub(crate) type Fingerprint = (std::time::SystemTime, u64, u64);

/// The file's fingerprint now; `None` while it is missing or unreadable.
pub(crate) fn fingerprint(path: &Path) -> Option<Fingerprint> {
    use std::hash::{Hash, Hasher};
    let meta = std::fs::metadata(path).ok()?;
    let text = std::fs::read(path).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    Some((meta.modified().ok()?, meta.len(), h.finish()))
}
