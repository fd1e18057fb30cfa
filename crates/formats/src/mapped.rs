//! Giving back the memory of mapped file ranges a loader has finished copying.
//!
//! A loader that copies weights out of a memory-mapped file would otherwise hold every page twice
//! until the map is dropped: once as file-backed pages of the map (counted in the process's resident
//! set), once in its own buffers. Releasing each range right after its copy keeps the peak close to
//! the file's size.
//!
//! A reader that does not copy holds a [`MappedBytes`] instead: a range of a map that keeps the map alive,
//! so weights can stay in the page cache (GPT-OSS's MXFP4 experts: 12 GB a token touches only a tenth of).

use std::ops::Range;
use std::sync::Arc;

/// A byte range of a shared read-only file map; the map lives as long as any range of it.
#[derive(Clone)]
pub struct MappedBytes {
    map: Arc<memmap2::Mmap>,
    range: Range<usize>,
}

impl MappedBytes {
    /// The sub-slice `range` of `map`; `None` when it does not lie inside it.
    pub(crate) fn new(map: &Arc<memmap2::Mmap>, range: &[u8]) -> Option<MappedBytes> {
        let start = (range.as_ptr() as usize).checked_sub(map.as_ptr() as usize)?;
        (start + range.len() <= map.len()).then(|| MappedBytes { map: map.clone(), range: start..start + range.len() })
    }

    /// A sub-range, relative to this one; `None` when it does not lie inside it.
    pub fn slice(&self, range: Range<usize>) -> Option<MappedBytes> {
        (range.start <= range.end && range.end <= self.range.len()).then(|| MappedBytes {
            map: self.map.clone(),
            range: self.range.start + range.start..self.range.start + range.end,
        })
    }
}

impl std::ops::Deref for MappedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
}

impl std::fmt::Debug for MappedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedBytes({} bytes)", self.range.len())
    }
}

/// Drops the resident pages wholly inside `range` (a sub-slice of `map`); later reads fault them back
/// in from the file. Advisory: does nothing for ranges outside the map or on other systems.
pub(crate) fn release(map: &memmap2::Mmap, range: &[u8]) {
    let (base, start) = (map.as_ptr() as usize, range.as_ptr() as usize);
    let Some(offset) = start.checked_sub(base) else { return };
    if offset + range.len() > map.len() {
        return;
    }
    const PAGE: usize = 4096;
    let (first, end) = (offset.next_multiple_of(PAGE), (offset + range.len()) / PAGE * PAGE);
    if end <= first {
        return;
    }
    #[cfg(unix)]
    // SAFETY: the map is a read-only mapping of a file (memmap2::Mmap::map), so MADV_DONTNEED only drops
    // clean pages that later reads fault back in with the same contents: no reference into the map can
    // observe a change. The range lies inside the map (checked above). Failure only leaves pages resident.
    let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, first, end - first) };
}
