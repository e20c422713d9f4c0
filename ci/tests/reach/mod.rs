//! Reaching a node from the network lab's Linux side: ping, and the banner
//! the node's TCP port 4471 answers with.

use std::time::Duration;

use tern_lab::netlab::Netns;

/// Whether `address` answers one ping within `tries` attempts (a node
/// without a console is waited for this way).
pub fn answers_within(netns: &Netns, address: &str, tries: usize) -> bool {
    (0..tries).any(|_| {
        let ok = netns.exec("ping", &["-c", "1", "-W", "2", address]).is_ok();
        if !ok {
            std::thread::sleep(Duration::from_millis(500));
        }
        ok
    })
}

/// Three pings, all answered.
pub fn pings(netns: &Netns, address: &str) {
    let ping = netns
        .exec("ping", &["-c", "3", "-W", "5", address])
        .unwrap();
    let ping = String::from_utf8_lossy(&ping.stdout);
    assert!(ping.contains("3 packets transmitted, 3 received"), "{ping}");
}

/// The line TCP port 4471 of `address` answers with.
pub fn banner(netns: &Netns, address: &str) -> String {
    let hello = netns
        .exec(
            "timeout",
            &[
                "20",
                "bash",
                "-c",
                &format!("exec 3<>/dev/tcp/{address}/4471 && cat <&3"),
            ],
        )
        .unwrap();
    String::from_utf8_lossy(&hello.stdout).into_owned()
}
