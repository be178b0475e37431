//! Resident memory of this process, read from `/proc/self/status` (Linux). `None` where
//! procfs is missing, so a scenario can say it did not measure rather than pretend.
//!
//! Resident size is a coarse, allocator-shaped signal: freed memory often stays mapped, so
//! it measures a high-water mark. It still grows with anything retained per session, which
//! is what the storm scenario bounds.

/// `VmRSS` in KiB.
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => Some(n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_resident_size_line() {
        let s = "Name:\tsim\nVmPeak:\t  9000 kB\nVmRSS:\t   4242 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(parse_vm_rss(s), Some(4242));
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
        assert_eq!(parse_vm_rss("Name:\tsim\n"), None);
    }

    #[test]
    fn this_process_has_a_resident_size() {
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(rss_kib().is_some_and(|k| k > 0));
        }
    }
}
