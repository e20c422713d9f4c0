//! Boot tests: every board boots its kernel in QEMU to the banner and the
//! shell, answers `info` and an unknown command, and `halt 3` ends QEMU with
//! the board's exit status for code 3.

use tern_flash::qemu::halt_status;
use tern_flash::Board;
use tern_lab::node::{Node, BOOT_TIMEOUT, REPLY_TIMEOUT};

/// Tern's version, as the kernels print it in their banner.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Boots `board` and checks everything the shell promises.
fn boots_to_a_working_shell(board: Board, info_lines: &[&str]) {
    let mut node = Node::boot(board).unwrap();
    let banner = format!("Tern {VERSION} on {} ({})\r\n", board.name(), board.isa());
    let before = node.expect(&banner, BOOT_TIMEOUT).unwrap();
    // The banner is the first line the kernel prints.
    assert!(
        before
            .trim_start_matches(['\r', '\n'])
            .starts_with(&format!("Tern {VERSION}")),
        "output before the banner: {before:?}"
    );
    node.expect(tern_lab::node::tern_prompt(), BOOT_TIMEOUT)
        .unwrap();

    let info = node.command("info").unwrap();
    let mut expected = vec![
        format!("board: {}", board.name()),
        format!("isa: {}", board.isa()),
    ];
    expected.extend(info_lines.iter().map(|line| line.to_string()));
    for line in &expected {
        assert!(
            info.lines().any(|l| l.starts_with(line.as_str())),
            "{line:?} missing from info:\n{info}"
        );
    }
    // Memory and timer are real, non-zero numbers.
    for key in ["memory: ", "timer: "] {
        let value = info
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key:?} in {info}"));
        let number: u64 = value.split(' ').next().unwrap().parse().unwrap();
        assert!(number > 0, "{key}{value}");
    }
    assert!(info.contains("uptime: "), "{info}");

    let error = node.command("frobnicate now").unwrap();
    assert_eq!(
        error, "error: unknown command 'frobnicate' (try 'help')\r\n",
        "an unknown command gets exactly one line"
    );

    node.send_line("halt 3").unwrap();
    node.expect("halting with code 3", REPLY_TIMEOUT).unwrap();
    assert_eq!(
        node.wait_exit(REPLY_TIMEOUT).unwrap(),
        halt_status(board, 3)
    );
}

#[test]
fn rpi4_boots() {
    boots_to_a_working_shell(Board::Rpi4, &["serial: ", "mac: ", "uptime: "]);
}

#[test]
fn virt_boots() {
    boots_to_a_working_shell(Board::Virt, &["uptime: "]);
}

#[test]
fn pc_boots() {
    boots_to_a_working_shell(Board::Pc, &["uptime: "]);
}
