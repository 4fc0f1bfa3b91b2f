//! Which interfaces media arrives on: those to attach the program to.

// getifaddrs(3) has no safe wrapper in the dependencies; see the block.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Loopback (this host's own peers always come through it), and every
/// interface holding one of `media_ips`; every interface when one of them
/// is unspecified (0.0.0.0 or ::).
pub fn carrying(media_ips: &[IpAddr]) -> Result<Vec<String>, String> {
    let all = media_ips.iter().any(IpAddr::is_unspecified);
    let mut names = vec!["lo".to_string()];
    for (name, ip) in addresses()? {
        if (all || media_ips.contains(&ip)) && !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// Every interface address of this host, with its interface's name.
fn addresses() -> Result<Vec<(String, IpAddr)>, String> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below, once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(format!("getifaddrs: {}", std::io::Error::last_os_error()));
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive
        // until freeifaddrs; `ifa_name` is a C string; `ifa_addr`, when
        // not null, points to a sockaddr of the family it names.
        unsafe {
            let ifa = &*cur;
            let name = CStr::from_ptr(ifa.ifa_name).to_string_lossy().into_owned();
            if !ifa.ifa_addr.is_null() {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                        out.push((name, IpAddr::V4(ip)));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        out.push((name, IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))));
                    }
                    _ => {}
                }
            }
            cur = ifa.ifa_next;
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_media_needs_loopback_only() {
        let names = carrying(&["127.0.0.1".parse().unwrap()]).unwrap();
        assert_eq!(names, ["lo"]);
        let all = carrying(&["0.0.0.0".parse().unwrap()]).unwrap();
        assert!(all.contains(&"lo".to_string()));
        assert!(addresses().unwrap().iter().any(|(n, ip)| n == "lo" && ip.is_loopback()));
    }
}
