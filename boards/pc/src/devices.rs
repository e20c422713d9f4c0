//! The PC's devices, found by walking every PCI bus ([`tern_board_pc::pci`])
//! through the machine's configuration space ([`crate::pcicfg`]): the
//! network card (Intel e1000e/igb through `tern-intel-eth`, Realtek
//! RTL8111/8168 through `tern-rtl8168`, virtio-net under QEMU; the first one
//! found on the buses) and virtio-rng, with the CPU's
//! RDRAND ([`rdrand`]) as the entropy source of a real PC without
//! virtio-rng.
//!
//! A device's memory BARs are mapped uncached before its driver touches
//! them, wherever the firmware put them: UEFI firmware places 64-bit BARs
//! above 4 GiB.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt::Write;

use critical_section::Mutex;
use tern_board_common::virtio::{HeapHal, VirtioDevices};
use tern_board_pc::pagetable::{Cache, MapError};
use tern_board_pc::pci::{self, Function, PciAddress, COMMAND_BUS_MASTER, COMMAND_MEMORY};
use tern_hal::{EntropySource, MonotonicClock, NetDevice};
use tern_intel_eth::{IntelEth, Part};
use tern_nic::{EthernetDriver, PolledNet};
use tern_rtl8168::Rtl8168;
use virtio_drivers::transport::pci::bus::{
    DeviceFunction, DeviceFunctionInfo, HeaderType, PciRoot,
};
use virtio_drivers::transport::pci::{virtio_device_type, PciTransport};
use virtio_drivers::transport::DeviceType;

use crate::log;
use crate::nic::{self, HeapDma, MmioBus};
use crate::paging;
use crate::pcicfg::{PcConfigSpace, VirtioCam};
use crate::rdrand::Rdrand;

/// Every function found at boot, for the `hw` command.
static FUNCTIONS: Mutex<RefCell<Vec<Function>>> = Mutex::new(RefCell::new(Vec::new()));

/// Walks the buses, keeps the list, and initialises the first network
/// device and the first virtio-rng; without virtio-rng, RDRAND where the
/// CPU has it. Drivers that wait use `clock`.
pub fn probe(space: PcConfigSpace, clock: &'static dyn MonotonicClock) -> VirtioDevices {
    let mut config = space;
    let roots: Vec<_> = space.roots().collect();
    let functions = pci::enumerate(&mut config, &roots);
    log::info(format_args!(
        "PCI: {} functions through {}",
        functions.len(),
        if space.uses_ecam() {
            "ECAM (MCFG)"
        } else {
            "ports 0xcf8/0xcfc"
        }
    ));
    let mut devices = VirtioDevices::default();
    for function in &functions {
        if devices.net.is_none() {
            if let Some(part) = Part::identify(function.vendor_id, function.device_id) {
                devices.net = intel(space, function, part, clock);
                continue;
            }
            if tern_rtl8168::supports(function.vendor_id, function.device_id) {
                devices.net = realtek(space, function, clock);
                continue;
            }
        }
        let Some(kind) = virtio_kind(function) else {
            continue;
        };
        let wanted = match kind {
            DeviceType::Network => devices.net.is_none(),
            DeviceType::EntropySource => devices.entropy.is_none(),
            _ => false,
        };
        if wanted {
            if let Some(transport) = virtio_transport(space, function, kind) {
                devices.offer(transport);
            }
        }
    }
    if devices.entropy.is_none() {
        devices.entropy = Rdrand::detect().map(|rdrand| Box::new(rdrand) as Box<dyn EntropySource>);
    }
    critical_section::with(|cs| *FUNCTIONS.borrow_ref_mut(cs) = functions);
    devices
}

/// The I/O port of the first PCI serial card (class 07, subclass 00: a
/// 16550-compatible UART behind an I/O BAR), with I/O decoding turned on.
pub fn serial_card(space: PcConfigSpace) -> Option<u16> {
    let mut config = space;
    critical_section::with(|cs| {
        FUNCTIONS
            .borrow_ref(cs)
            .iter()
            .filter(|f| f.class[..2] == [0x07, 0x00])
            .find_map(|f| {
                let (port, size) = f.io_bar()?;
                (size >= 8).then_some(())?;
                let port = u16::try_from(port).ok()?;
                pci::enable(&mut config, f.address, pci::COMMAND_IO);
                Some(port)
            })
    })
}

/// Writes one line per PCI function found at boot.
pub fn describe(out: &mut dyn Write) {
    critical_section::with(|cs| {
        for f in FUNCTIONS.borrow_ref(cs).iter() {
            let _ = write!(
                out,
                "pci {} {:04x}:{:04x} class {:02x}{:02x}{:02x}",
                f.address, f.vendor_id, f.device_id, f.class[0], f.class[1], f.class[2]
            );
            for (slot, address, size, prefetchable) in f.memory_bars() {
                let kind = if prefetchable { "pf" } else { "mem" };
                let _ = write!(out, " bar{slot}={kind}:{address:#x}+{size:#x}");
            }
            if let Some((port, size)) = f.io_bar() {
                let _ = write!(out, " io:{port:#x}+{size:#x}");
            }
            let _ = write!(out, "\r\n");
        }
    });
}

/// Maps every memory BAR of `function` with the cache type devices need
/// (uncached; prefetchable windows such as framebuffers are mapped by their
/// users) and turns on memory decoding and bus mastering.
pub fn claim(space: &mut PcConfigSpace, function: &Function) -> Result<(), MapError> {
    for (_, address, size, _) in function.memory_bars() {
        if address != 0 {
            paging::map(address, size, Cache::Uncached)?;
        }
    }
    pci::enable(space, function.address, COMMAND_MEMORY | COMMAND_BUS_MASTER);
    Ok(())
}

/// Maps `function`'s BARs, turns on decoding and bus mastering, and returns
/// the bus on its register BAR (`slot`, or the first memory BAR) and the
/// BAR's address.
fn register_bus(
    space: PcConfigSpace,
    function: &Function,
    slot: Option<usize>,
) -> Result<(MmioBus, u64), String> {
    let mut config = space;
    let (_, base, size, _) = function
        .memory_bars()
        .find(|bar| slot.is_none_or(|slot| bar.0 == slot))
        .ok_or("no register BAR")?;
    claim(&mut config, function).map_err(|error| format!("its BARs: {error}"))?;
    // SAFETY: the card's register BAR, just mapped uncached by `claim`; the
    // driver that gets the bus is its only user.
    let bus = unsafe { MmioBus::new(base, size as usize) }.ok_or("register BAR unassigned")?;
    Ok((bus, base))
}

/// The brought-up `driver` as the kernel's network device, or why there is
/// none (logged either way).
fn attach<D>(
    name: &str,
    at: PciAddress,
    clock: &'static dyn MonotonicClock,
    driver: Result<(D, u64), String>,
) -> Option<Box<dyn NetDevice>>
where
    D: EthernetDriver + Send + 'static,
    D::Error: Send,
{
    match driver {
        Ok((driver, base)) => {
            log::info(format_args!("net: {name} at {at}, registers at {base:#x}"));
            Some(Box::new(PolledNet::new(driver, clock)))
        }
        Err(why) => {
            log::warn(format_args!("net: {name} at {at}: {why}"));
            None
        }
    }
}

/// Brings up the Intel card `function` (a `part`, registers in BAR 0).
fn intel(
    space: PcConfigSpace,
    function: &Function,
    part: Part,
    clock: &'static dyn MonotonicClock,
) -> Option<Box<dyn NetDevice>> {
    let driver = register_bus(space, function, Some(0)).and_then(|(bus, base)| {
        let driver = IntelEth::new(bus, &mut HeapDma, nic::delay(clock), part);
        driver.map(|d| (d, base)).map_err(|error| error.to_string())
    });
    attach(
        &format!("Intel {}", part.name()),
        function.address,
        clock,
        driver,
    )
}

/// Brings up the Realtek RTL8111/8168 `function` (registers in its first
/// memory BAR; BAR 0 is its I/O window).
fn realtek(
    space: PcConfigSpace,
    function: &Function,
    clock: &'static dyn MonotonicClock,
) -> Option<Box<dyn NetDevice>> {
    let driver = register_bus(space, function, None).and_then(|(bus, base)| {
        let driver = Rtl8168::new(bus, &mut HeapDma, nic::delay(clock));
        driver.map(|d| (d, base)).map_err(|error| error.to_string())
    });
    let name = match &driver {
        Ok((d, _)) => format!("Realtek RTL8168 (version {:#x})", d.version()),
        Err(_) => String::from("Realtek RTL8168"),
    };
    attach(&name, function.address, clock, driver)
}

/// The virtio device type of `function`, if it is a virtio device.
fn virtio_kind(function: &Function) -> Option<DeviceType> {
    let info = DeviceFunctionInfo {
        vendor_id: function.vendor_id,
        device_id: function.device_id,
        class: function.class[0],
        subclass: function.class[1],
        prog_if: function.class[2],
        revision: function.revision,
        header_type: HeaderType::Standard,
    };
    virtio_device_type(&info)
}

/// The virtio transport of `function` (a `kind` device), its BARs mapped;
/// `None` (logged) when that fails.
fn virtio_transport(
    space: PcConfigSpace,
    function: &Function,
    kind: DeviceType,
) -> Option<PciTransport> {
    let mut config = space;
    if let Err(error) = claim(&mut config, function) {
        log::warn(format_args!(
            "virtio {kind:?} at {}: {error}",
            function.address
        ));
        return None;
    }
    let mut root = PciRoot::new(VirtioCam::new(space, function.address.segment));
    let device_function = DeviceFunction {
        bus: function.address.bus,
        device: function.address.device,
        function: function.address.function,
    };
    match PciTransport::new::<HeapHal, _>(&mut root, device_function) {
        Ok(transport) => Some(transport),
        Err(error) => {
            log::warn(format_args!(
                "virtio {kind:?} at {}: {error}",
                function.address
            ));
            None
        }
    }
}
