//! The VideoCore mailbox property interface (mailbox 0, channel 8).
//!
//! A request is a 16-byte-aligned buffer in RAM whose address goes to the
//! firmware through the mailbox registers; the firmware answers in place.
//! The GPU does not snoop the ARM caches, so the address it gets is the
//! buffer's in the VideoCore's uncached alias (bus address 0xC000_0000 +
//! ARM address, as Linux's and circle's mailbox code pass it), and the
//! buffer is cleaned to RAM before the request and invalidated before the
//! answer is read.

use core::cell::RefCell;

use aarch64_cpu::registers::{CNTFRQ_EL0, CNTPCT_EL0};
use bcm2711_lpa::common::{Read as _, RegisterValue as _, Write as _};
use bcm2711_lpa::VCMAILBOX;
use critical_section::Mutex;
use tern_board_aarch64::cache;
use tock_registers::interfaces::Readable;

/// Property channel (ARM to VideoCore).
const CHANNEL: u32 = 8;
const REQUEST: u32 = 0;
/// Status bit: the mailbox cannot take another message.
const MAILBOX_FULL: u32 = 1 << 31;
const RESPONSE_OK: u32 = 0x8000_0000;
const TAG_RESPONSE: u32 = 0x8000_0000;
/// Longest tag value handled, in 32-bit words.
const MAX_VALUE_WORDS: usize = 4;
/// Header (2) + tag header (3) + value + end tag (1).
const BUFFER_WORDS: usize = 6 + MAX_VALUE_WORDS;

/// Tag: board serial number (u64).
pub const TAG_BOARD_SERIAL: u32 = 0x0001_0004;
/// Tag: Ethernet MAC address (6 bytes).
pub const TAG_MAC_ADDRESS: u32 = 0x0001_0003;
/// Tag: ARM memory base and size.
pub const TAG_ARM_MEMORY: u32 = 0x0001_0005;
/// Tag: a clock's current rate.
pub const TAG_GET_CLOCK_RATE: u32 = 0x0003_0002;
/// Tag: a clock's maximum rate.
pub const TAG_GET_MAX_CLOCK_RATE: u32 = 0x0003_0004;
/// Tag: set a clock's rate.
pub const TAG_SET_CLOCK_RATE: u32 = 0x0003_8002;
/// Clock id of the UART clock.
pub const CLOCK_UART: u32 = 2;
/// Clock id of the ARM cores' clock.
pub const CLOCK_ARM: u32 = 3;
/// The VideoCore's uncached alias of the ARM's low 1 GiB (bus addresses
/// 0xC000_0000..): the firmware reads and writes the buffer through it,
/// never through its L2 cache.
const UNCACHED_ALIAS: u32 = 0xC000_0000;

/// Why a mailbox request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MailboxError {
    /// The firmware did not answer within a second.
    #[error("mailbox timeout")]
    Timeout,
    /// The firmware rejected the whole request.
    #[error("mailbox request rejected (code {0:#x})")]
    Rejected(u32),
    /// The firmware did not process the tag.
    #[error("mailbox tag {0:#x} not answered")]
    TagFailed(u32),
}

#[repr(C, align(64))]
struct Buffer([u32; BUFFER_WORDS]);

static BUFFER: Mutex<RefCell<Buffer>> = Mutex::new(RefCell::new(Buffer([0; BUFFER_WORDS])));

/// Cleans and invalidates the data cache lines of `buffer` to the point of
/// coherency (a no-op in effect while the caches are off).
fn clean_invalidate(buffer: &Buffer) {
    cache::clean_invalidate(
        buffer as *const Buffer as usize,
        core::mem::size_of::<Buffer>(),
    );
}

/// Sends one property tag with `values` as its request value and returns
/// the firmware's response value words.
pub fn property(tag: u32, values: &[u32]) -> Result<[u32; MAX_VALUE_WORDS], MailboxError> {
    critical_section::with(|cs| {
        let mut buffer = BUFFER.borrow_ref_mut(cs);
        let words = &mut buffer.0;
        words.fill(0);
        words[0] = (BUFFER_WORDS * 4) as u32;
        words[1] = REQUEST;
        words[2] = tag;
        words[3] = (MAX_VALUE_WORDS * 4) as u32;
        words[4] = 0;
        for (slot, value) in words[5..5 + MAX_VALUE_WORDS].iter_mut().zip(values) {
            *slot = *value;
        }
        // words[BUFFER_WORDS - 1] = 0 is the end tag.
        clean_invalidate(&buffer);
        // The buffer is a static of the image, in the low 1 GiB the alias covers.
        let arm_address = &*buffer as *const Buffer as usize as u32;
        let message = ((arm_address | UNCACHED_ALIAS) & !0xf) | CHANNEL;
        exchange(message)?;
        clean_invalidate(&buffer);
        let words = &buffer.0;
        if words[1] != RESPONSE_OK {
            return Err(MailboxError::Rejected(words[1]));
        }
        if words[4] & TAG_RESPONSE == 0 {
            return Err(MailboxError::TagFailed(tag));
        }
        let mut out = [0; MAX_VALUE_WORDS];
        out.copy_from_slice(&words[5..5 + MAX_VALUE_WORDS]);
        Ok(out)
    })
}

/// Posts `message` and waits up to a second for the answer to it.
fn exchange(message: u32) -> Result<(), MailboxError> {
    let deadline = CNTPCT_EL0.get() + CNTFRQ_EL0.get();
    let wait = |ready: &dyn Fn() -> bool| {
        while !ready() {
            if CNTPCT_EL0.get() > deadline {
                return Err(MailboxError::Timeout);
            }
            core::hint::spin_loop();
        }
        Ok(())
    };
    // Every access: a mailbox register at its fixed BCM2711 address, which
    // only this module touches; reading `read` pops one answer, ours or stale.
    // SAFETY: see above (status register, no side effect).
    wait(&|| unsafe { VCMAILBOX.status1().read().get_raw() & MAILBOX_FULL == 0 })?;
    // SAFETY: see above (posts our message; the mailbox has room).
    unsafe { VCMAILBOX.write().write_raw(message) };
    loop {
        // SAFETY: see above (status register, no side effect).
        wait(&|| unsafe { !VCMAILBOX.status0().read().empty().get() })?;
        // SAFETY: see above (pops the answer the status announced).
        if unsafe { VCMAILBOX.read().read().get_raw() } == message {
            return Ok(());
        }
    }
}

/// The board's serial number.
pub fn board_serial() -> Result<u64, MailboxError> {
    let v = property(TAG_BOARD_SERIAL, &[])?;
    Ok(u64::from(v[0]) | u64::from(v[1]) << 32)
}

/// The Ethernet MAC address assigned by the firmware.
pub fn mac_address() -> Result<[u8; 6], MailboxError> {
    let v = property(TAG_MAC_ADDRESS, &[])?;
    let [a, b, c, d] = v[0].to_le_bytes();
    let [e, f, _, _] = v[1].to_le_bytes();
    Ok([a, b, c, d, e, f])
}

/// The RAM the firmware leaves to the ARM cores: (base, size) in bytes.
pub fn arm_memory() -> Result<(u64, u64), MailboxError> {
    let v = property(TAG_ARM_MEMORY, &[])?;
    Ok((u64::from(v[0]), u64::from(v[1])))
}

/// Sets the rate of clock `clock` to `hz`; returns the rate now in effect.
pub fn set_clock_rate(clock: u32, hz: u32) -> Result<u32, MailboxError> {
    let v = property(TAG_SET_CLOCK_RATE, &[clock, hz, 0])?;
    Ok(v[1])
}

/// Raises the ARM clock to its maximum (a bare-metal Pi 4 starts at the
/// minimum: Linux's cpufreq raises it, nothing else does); returns the rate
/// the firmware reports afterwards.
pub fn raise_arm_clock() -> Result<u32, MailboxError> {
    let max = property(TAG_GET_MAX_CLOCK_RATE, &[CLOCK_ARM])?[1];
    set_clock_rate(CLOCK_ARM, max)?;
    Ok(property(TAG_GET_CLOCK_RATE, &[CLOCK_ARM])?[1])
}
