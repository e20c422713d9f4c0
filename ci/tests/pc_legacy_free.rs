//! A legacy-free PC: QEMU q35 without the 8254 PIT and the 8259 PICs
//! (`pit=off,pic=off`), once with the HPET and once without (`hpet=off`).
//! The kernel must boot, tick at 100 Hz from the local APIC timer (x2APIC
//! mode on the first machine, whose CPU model has it; xAPIC on the second),
//! and
//! measure the TSC against the HPET (else the ACPI PM timer) within
//! [`TOLERANCE_PERCENT`] of its true rate. The second machine has no COM1
//! either: its console is a PCI serial card (QEMU's `pci-serial`, a 16550
//! behind an I/O BAR), and it ends with `reboot` (the FADT's reset register;
//! QEMU's `-no-reboot` turns the reset into an exit with status 0).
//!
//! The true rate: under TCG the guest's RDTSC returns the host's time-stamp
//! counter (QEMU's `cpu_get_host_ticks`), so the test measures the host's
//! TSC against its monotonic clock over half a second.

use std::arch::x86_64::_rdtsc;
use std::time::{Duration, Instant};

use tern_flash::{Board, Variant};
use tern_lab::node::{Node, SerialMode, BOOT_TIMEOUT, REPLY_TIMEOUT};

/// How far the guest's calibration may be from the host's TSC rate.
const TOLERANCE_PERCENT: f64 = 2.0;

/// The host's TSC rate in Hz.
fn host_tsc_hz() -> f64 {
    // SAFETY: RDTSC exists on every x86_64 CPU and has no side effects.
    let (start, t0) = (unsafe { _rdtsc() }, Instant::now());
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: as above.
    let (end, t1) = (unsafe { _rdtsc() }, Instant::now());
    (end - start) as f64 / (t1 - t0).as_secs_f64()
}

/// The number after `key` in `info`'s answer.
fn value(info: &str, key: &str) -> f64 {
    info.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no {key:?} in {info}"))
}

fn legacy_free_boot(machine: &str, cpu: &str, reference: &str, serial: SerialMode) -> Node {
    let elf = tern_lab::node::kernel(Board::Pc, Variant::Tern).unwrap();
    let launch = tern_lab::node::Launch {
        netns: None,
        extra_args: ["-machine", machine, "-cpu", cpu]
            .map(String::from)
            .to_vec(),
    };
    let mut node =
        Node::start_with(Board::Pc, tern_lab::node::Boot::Elf(elf), serial, &launch).unwrap();
    node.expect(tern_lab::node::tern_prompt(), BOOT_TIMEOUT)
        .unwrap();

    let hw = node.command("hw").unwrap();
    assert!(
        hw.contains(&format!("measured against the {reference}")),
        "{reference} not used:\n{hw}"
    );
    assert!(hw.contains("local APIC timer"), "{hw}");
    assert!(hw.contains("8259s masked"), "{hw}");

    let first = node.command("info").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let second = node.command("info").unwrap();
    let rate = (value(&second, "timer interrupts: ") - value(&first, "timer interrupts: "))
        / (value(&second, "uptime: ") - value(&first, "uptime: "));
    assert!(
        (80.0..=120.0).contains(&rate),
        "{rate} ticks/s:\n{first}\n{second}"
    );

    let guest = value(&second, "timer: ");
    let host = host_tsc_hz();
    let off = (guest - host).abs() / host * 100.0;
    eprintln!("{machine}: guest TSC {guest} Hz, host TSC {host:.0} Hz, {off:.3}% apart");
    assert!(
        off <= TOLERANCE_PERCENT,
        "guest TSC {guest} Hz, host TSC {host:.0} Hz: {off:.2}% apart"
    );
    node
}

#[test]
fn without_pit_and_pic_the_hpet_calibrates_and_the_apic_ticks() {
    // `max` has the x2APIC (TCG models it, but not TSC-deadline mode).
    let mut node = legacy_free_boot("q35,pit=off,pic=off", "max", "HPET", SerialMode::Pipes);
    let hw = node.command("hw").unwrap();
    assert!(hw.contains("local APIC timer (x2APIC"), "{hw}");
    node.send_line("halt 3").unwrap();
    assert_eq!(
        node.wait_exit(REPLY_TIMEOUT).unwrap(),
        tern_flash::qemu::halt_status(Board::Pc, 3)
    );
}

#[test]
fn without_pit_pic_hpet_and_com1_the_pm_timer_calibrates_and_a_pci_card_is_the_console() {
    let mut node = legacy_free_boot(
        "q35,pit=off,pic=off,hpet=off",
        "qemu64",
        "ACPI PM timer",
        SerialMode::PciCard,
    );
    let hw = node.command("hw").unwrap();
    let console = hw.lines().find(|l| l.starts_with("console: ")).unwrap();
    assert!(
        console.starts_with("console: 16550 UART at I/O port 0x") && !console.ends_with("0x3f8"),
        "{hw}"
    );
    assert!(hw.contains("keyboard: PS/2 on the i8042"), "{hw}");
    node.send_line("reboot").unwrap();
    node.expect("rebooting", REPLY_TIMEOUT).unwrap();
    assert_eq!(node.wait_exit(REPLY_TIMEOUT).unwrap(), 0);
}
