//! Giving back the memory of mapped file ranges a loader has finished copying.
//!
//! A loader that copies weights out of a memory-mapped file would otherwise hold every page twice
//! until the map is dropped: once as file-backed pages of the map (counted in the process's resident
//! set), once in its own buffers. Releasing each range right after its copy keeps the peak close to
//! the file's size.

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
