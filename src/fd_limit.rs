//! The open-files limit. Every client connection holds a descriptor (an L4 connection two
//! sockets and, when splicing, two pipes), and the usual default soft limit of 1024 is
//! below what the cache's default `conn_limit` alone allows. Like memcached, the node raises
//! its soft limit as far as the hard limit lets it when it starts, and says when the result
//! is still too low for the configured connection limits.

/// Descriptors kept aside for listeners, log files, the admin API and replication links.
pub const RESERVED: u64 = 64;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit before and after.
#[cfg(target_os = "linux")]
pub fn raise() -> std::io::Result<(u64, u64)> {
    // The kernel refuses more than fs.nr_open (1,048,576 by default) even when the hard
    // limit says "unlimited".
    const MOST: libc::rlim_t = 1 << 20;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    let wanted = limit.rlim_max.min(MOST);
    if wanted > before {
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        return Ok((before, wanted));
    }
    Ok((before, before))
}

/// Elsewhere the limit is left as the system set it.
#[cfg(not(target_os = "linux"))]
pub fn raise() -> std::io::Result<(u64, u64)> {
    Ok((0, 0))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn raising_leaves_the_soft_limit_at_the_hard_one_or_a_million() {
        let (before, after) = super::raise().expect("getrlimit");
        assert!(after >= before);
        let (again, same) = super::raise().expect("getrlimit");
        assert_eq!(
            (again, same),
            (after, after),
            "a second call changes nothing"
        );
    }
}
