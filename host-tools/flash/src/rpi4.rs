//! Raspberry Pi 4 deployments: the boot files (`config.txt`, `kernel8.img`)
//! in a mounted boot partition, and a whole SD-card image (MBR, one FAT32
//! boot partition) built without external tools.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use mbrman::{MBRPartitionEntry, CHS, MBR};

use crate::{fsutil, FlashError};

/// The firmware files the Pi 4's boot ROM and `start4.elf` need next to
/// Tern's files. Tern does not ship them (see the README's quick-start).
pub const FIRMWARE_FILES: [&str; 3] = ["start4.elf", "fixup4.dat", "bcm2711-rpi-4-b.dtb"];

/// The kernel image's name: the firmware loads `kernel8.img` for `arm_64bit=1`.
pub const KERNEL_IMAGE: &str = "kernel8.img";

/// The firmware configuration's name.
pub const CONFIG_TXT: &str = "config.txt";

/// Sector size of the SD-card image.
const SECTOR: u64 = 512;

/// First sector of the boot partition: 1 MiB, the alignment SD cards' erase
/// blocks and the Raspberry Pi OS images use.
pub const PARTITION_START_LBA: u32 = 2048;

/// Size of the boot partition: 64 MiB gives FAT32 with 512-byte clusters
/// more than the 65525 clusters the format requires, with room for the
/// firmware (about 3 MiB) and any kernel.
pub const PARTITION_SECTORS: u32 = (64 << 20) / SECTOR as u32;

/// MBR partition type of FAT32 addressed by LBA, what the boot ROM reads.
const FAT32_LBA: u8 = 0x0c;

/// What the generated `config.txt` turns on besides Tern's boot settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootConfig {
    /// JTAG on GPIO 22–27 for `flash --probe` (`enable_jtag_gpio=1`).
    pub jtag: bool,
}

impl BootConfig {
    /// The `config.txt` Tern boots with.
    pub fn config_txt(self) -> String {
        let mut text = String::from(
            "# Tern on the Raspberry Pi 4, written by `flash --board rpi4`.\n\
             # Start in 64-bit mode: the firmware loads kernel8.img at 0x80000 and\n\
             # enters it at EL2 on core 0 (cores 1-3 wait in the spin tables).\n\
             arm_64bit=1\n\
             kernel=kernel8.img\n\
             kernel_address=0x80000\n\
             # UART0 (PL011) on GPIO 14/15, with the 48 MHz clock Tern's baud divisor assumes.\n\
             enable_uart=1\n\
             init_uart_clock=48000000\n\
             # Give the PL011 back to GPIO 14/15 (Bluetooth takes it by default).\n\
             dtoverlay=disable-bt\n\
             # The firmware's own boot diagnostics on the same UART: the first thing\n\
             # to look at when Tern's banner does not appear.\n\
             uart_2ndstage=1\n\
             # Tern draws nothing on the screen.\n\
             disable_splash=1\n",
        );
        if self.jtag {
            text.push_str(
                "# ARM JTAG on GPIO 22-27 (ALT4) for `flash --probe`: TRST 22 (pin 15),\n\
                 # RTCK 23 (16), TDO 24 (18), TCK 25 (22), TDI 26 (37), TMS 27 (13).\n\
                 enable_jtag_gpio=1\n",
            );
        }
        text
    }
}

/// Writes `kernel8.img` and `config.txt` into a mounted boot partition,
/// keeping everything else there, and returns the firmware files it lacks
/// (the card will not boot until they are added).
pub fn write_boot_dir(
    dir: &Path,
    kernel8: &[u8],
    config: BootConfig,
) -> Result<Vec<&'static str>, FlashError> {
    if !dir.is_dir() {
        return Err(FlashError::NotADirectory(dir.to_owned()));
    }
    fsutil::write_atomic(&dir.join(KERNEL_IMAGE), kernel8)?;
    fsutil::write_atomic(&dir.join(CONFIG_TXT), config.config_txt().as_bytes())?;
    Ok(missing_firmware(dir))
}

/// The firmware files absent from `dir`.
pub fn missing_firmware(dir: &Path) -> Vec<&'static str> {
    FIRMWARE_FILES
        .into_iter()
        .filter(|name| !dir.join(name).is_file())
        .collect()
}

/// Writes the deployable files and the kernel ELF into `dir` (created if needed).
pub fn save_image(
    dir: &Path,
    kernel8: &[u8],
    elf: &[u8],
    config: BootConfig,
) -> Result<(), FlashError> {
    std::fs::create_dir_all(dir).map_err(|source| FlashError::Write {
        path: dir.to_owned(),
        source,
    })?;
    fsutil::write_atomic(&dir.join(KERNEL_IMAGE), kernel8)?;
    fsutil::write_atomic(&dir.join(CONFIG_TXT), config.config_txt().as_bytes())?;
    fsutil::write_atomic(&dir.join("kernel.elf"), elf)
}

/// Byte offset of the boot partition in the SD-card image.
pub fn partition_offset() -> u64 {
    u64::from(PARTITION_START_LBA) * SECTOR
}

/// Creates the SD-card image `path`: an MBR with one FAT32 boot partition
/// holding `config.txt`, `kernel8.img` and, from `firmware`, the firmware
/// files (all three must be there). Without `firmware` the card holds only
/// Tern's files and needs the firmware copied in before it boots.
pub fn write_sd_image(
    path: &Path,
    kernel8: &[u8],
    firmware: Option<&Path>,
    config: BootConfig,
) -> Result<(), FlashError> {
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (CONFIG_TXT.into(), config.config_txt().into_bytes()),
        (KERNEL_IMAGE.into(), kernel8.to_vec()),
    ];
    if let Some(dir) = firmware {
        for name in FIRMWARE_FILES {
            let file = dir.join(name);
            let bytes = std::fs::read(&file).map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => FlashError::MissingFirmware {
                    dir: dir.to_owned(),
                    file: name,
                },
                _ => FlashError::Read {
                    path: file.clone(),
                    source,
                },
            })?;
            files.push((name.into(), bytes));
        }
    }
    let image_error = |source| FlashError::SdImage {
        path: path.to_owned(),
        source,
    };
    let mut temp = fsutil::temporary_beside(path).map_err(image_error)?;
    fill_sd_image(temp.as_file_mut(), &files).map_err(image_error)?;
    temp.as_file().sync_all().map_err(image_error)?;
    temp.persist(path).map_err(|e| image_error(e.error))?;
    Ok(())
}

fn fill_sd_image(file: &mut File, files: &[(String, Vec<u8>)]) -> io::Result<()> {
    let total = u64::from(PARTITION_START_LBA + PARTITION_SECTORS) * SECTOR;
    file.set_len(total)?;

    let mut mbr = MBR::new_from(file, SECTOR as u32, *b"TERN").map_err(io::Error::other)?;
    mbr[1] = MBRPartitionEntry {
        // The Pi's boot ROM ignores the flag; PCs' card readers like one set.
        boot: mbrman::BOOT_ACTIVE,
        first_chs: CHS::empty(),
        sys: FAT32_LBA,
        last_chs: CHS::empty(),
        starting_lba: PARTITION_START_LBA,
        sectors: PARTITION_SECTORS,
    };
    mbr.write_into(file).map_err(io::Error::other)?;

    let mut partition = Slice::new(
        file,
        partition_offset(),
        u64::from(PARTITION_SECTORS) * SECTOR,
    );
    fatfs::format_volume(
        &mut partition,
        fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat32)
            .total_sectors(PARTITION_SECTORS)
            .volume_label(*b"TERN-BOOT  ")
            .volume_id(volume_id()),
    )?;
    let fs = fatfs::FileSystem::new(&mut partition, fatfs::FsOptions::new())?;
    for (name, bytes) in files {
        let mut out = fs.root_dir().create_file(name)?;
        out.truncate()?;
        out.write_all(bytes)?;
        out.flush()?;
    }
    // Counting the free clusters records the count in the FSInfo sector, so
    // that `fsck.fat` finds it initialised.
    fs.stats()?;
    fs.unmount()
}

/// A volume serial number that differs between cards, as `mkfs.fat` makes it.
fn volume_id() -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_secs() as u32 ^ now.subsec_nanos()
}

/// A window of a file: the partition, seen by fatfs as a whole disk.
struct Slice<'a> {
    file: &'a mut File,
    start: u64,
    len: u64,
    position: u64,
}

impl<'a> Slice<'a> {
    fn new(file: &'a mut File, start: u64, len: u64) -> Self {
        Self {
            file,
            start,
            len,
            position: 0,
        }
    }

    /// How much of a `want`-byte transfer fits before the window's end.
    fn room(&self, want: usize) -> usize {
        want.min(self.len.saturating_sub(self.position) as usize)
    }
}

impl Read for Slice<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        self.file
            .seek(SeekFrom::Start(self.start + self.position))?;
        let n = self.file.read(&mut buf[..n])?;
        self.position += n as u64;
        Ok(n)
    }
}

impl Write for Slice<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "past the partition's end",
            ));
        }
        self.file
            .seek(SeekFrom::Start(self.start + self.position))?;
        let n = self.file.write(&buf[..n])?;
        self.position += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Slice<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        match target {
            Some(position) if position <= self.len => {
                self.position = position;
                Ok(position)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the partition",
            )),
        }
    }
}

/// Runs `read` on the FAT file system of the SD image's first partition
/// (as the MBR describes it), for checks and tests.
fn with_boot_partition<T>(
    image: &Path,
    read: impl FnOnce(&fatfs::FileSystem<&mut Slice>) -> io::Result<T>,
) -> Result<T, FlashError> {
    let error = |source| FlashError::SdImage {
        path: image.to_owned(),
        source,
    };
    let mut file = File::open(image).map_err(error)?;
    let mbr = MBR::read_from(&mut file, SECTOR as u32).map_err(|e| error(io::Error::other(e)))?;
    let entry = &mbr[1];
    if entry.sys != FAT32_LBA {
        return Err(error(io::Error::other(
            "the first partition is not FAT32 (LBA)",
        )));
    }
    let start = u64::from(entry.starting_lba) * SECTOR;
    let len = u64::from(entry.sectors) * SECTOR;
    let mut partition = Slice::new(&mut file, start, len);
    let fs = fatfs::FileSystem::new(&mut partition, fatfs::FsOptions::new()).map_err(error)?;
    read(&fs).map_err(error)
}

/// Reads the file `name` from the SD image's boot partition.
pub fn read_from_sd_image(image: &Path, name: &str) -> Result<Vec<u8>, FlashError> {
    with_boot_partition(image, |fs| {
        let mut bytes = Vec::new();
        fs.root_dir().open_file(name)?.read_to_end(&mut bytes)?;
        Ok(bytes)
    })
}

/// The names of the files in the SD image's boot partition, sorted.
pub fn sd_image_files(image: &Path) -> Result<Vec<String>, FlashError> {
    with_boot_partition(image, |fs| {
        let mut names = Vec::new();
        for entry in fs.root_dir().iter() {
            let entry = entry?;
            if entry.is_file() {
                names.push(entry.file_name());
            }
        }
        names.sort();
        Ok(names)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(config: BootConfig) -> Vec<String> {
        config
            .config_txt()
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn config_txt_boots_64_bit_at_0x80000_with_the_uart() {
        let lines = settings(BootConfig::default());
        for expected in [
            "arm_64bit=1",
            "kernel=kernel8.img",
            "kernel_address=0x80000",
            "enable_uart=1",
            "uart_2ndstage=1",
            "init_uart_clock=48000000",
        ] {
            assert!(
                lines.iter().any(|line| line == expected),
                "{expected} missing: {lines:?}"
            );
        }
        assert!(!lines.iter().any(|line| line.contains("jtag")), "{lines:?}");
    }

    #[test]
    fn jtag_adds_enable_jtag_gpio_and_keeps_the_rest() {
        let plain = settings(BootConfig::default());
        let jtag = settings(BootConfig { jtag: true });
        assert_eq!(jtag[..plain.len()], plain[..]);
        assert_eq!(jtag[plain.len()..], ["enable_jtag_gpio=1"]);
        let text = BootConfig { jtag: true }.config_txt();
        // The comment names the header pins docs/hardware-bringup.md wires.
        assert!(text.contains("TCK 25 (22)"), "{text}");
    }

    #[test]
    fn jtag_reaches_the_boot_dir_and_the_sd_image() {
        let jtag = BootConfig { jtag: true };
        let dir = tempfile::tempdir().unwrap();
        write_boot_dir(dir.path(), b"kernel", jtag).unwrap();
        let written = std::fs::read_to_string(dir.path().join("config.txt")).unwrap();
        assert!(written.lines().any(|line| line == "enable_jtag_gpio=1"));
        let image = dir.path().join("sd.img");
        write_sd_image(&image, b"kernel", None, jtag).unwrap();
        assert_eq!(
            read_from_sd_image(&image, "config.txt").unwrap(),
            jtag.config_txt().as_bytes()
        );
        let saved = dir.path().join("saved");
        save_image(&saved, b"kernel", b"elf", jtag).unwrap();
        assert_eq!(
            std::fs::read_to_string(saved.join("config.txt")).unwrap(),
            jtag.config_txt()
        );
    }

    #[test]
    fn boot_dir_keeps_firmware_and_reports_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("start4.elf"), b"firmware").unwrap();
        std::fs::write(dir.path().join("cmdline.txt"), b"keep me").unwrap();
        let missing = write_boot_dir(dir.path(), b"kernel", BootConfig::default()).unwrap();
        assert_eq!(missing, ["fixup4.dat", "bcm2711-rpi-4-b.dtb"]);
        assert_eq!(
            std::fs::read(dir.path().join("kernel8.img")).unwrap(),
            b"kernel"
        );
        assert_eq!(
            std::fs::read(dir.path().join("start4.elf")).unwrap(),
            b"firmware"
        );
        assert_eq!(
            std::fs::read(dir.path().join("cmdline.txt")).unwrap(),
            b"keep me"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("config.txt")).unwrap(),
            BootConfig::default().config_txt()
        );
        assert!(matches!(
            write_boot_dir(&dir.path().join("absent"), b"kernel", BootConfig::default()),
            Err(FlashError::NotADirectory(_))
        ));
    }

    fn firmware_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for name in FIRMWARE_FILES {
            std::fs::write(dir.path().join(name), format!("dummy {name}")).unwrap();
        }
        dir
    }

    #[test]
    fn sd_image_reads_back_with_fatfs() {
        let firmware = firmware_dir();
        let out = tempfile::tempdir().unwrap();
        let image = out.path().join("sd.img");
        let kernel: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        write_sd_image(
            &image,
            &kernel,
            Some(firmware.path()),
            BootConfig::default(),
        )
        .unwrap();

        let mut file = File::open(&image).unwrap();
        let mbr = MBR::read_from(&mut file, 512).unwrap();
        assert_eq!(mbr[1].sys, 0x0c);
        assert_eq!(mbr[1].starting_lba, PARTITION_START_LBA);
        assert!(!mbr[2].is_used());

        assert_eq!(read_from_sd_image(&image, "kernel8.img").unwrap(), kernel);
        assert_eq!(
            read_from_sd_image(&image, "config.txt").unwrap(),
            BootConfig::default().config_txt().as_bytes()
        );
        assert_eq!(
            read_from_sd_image(&image, "fixup4.dat").unwrap(),
            b"dummy fixup4.dat"
        );
        assert_eq!(
            sd_image_files(&image).unwrap(),
            [
                "bcm2711-rpi-4-b.dtb",
                "config.txt",
                "fixup4.dat",
                "kernel8.img",
                "start4.elf"
            ]
        );
        assert_eq!(
            std::fs::read_dir(out.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    #[test]
    fn sd_image_names_the_missing_firmware_file() {
        let firmware = firmware_dir();
        std::fs::remove_file(firmware.path().join("fixup4.dat")).unwrap();
        let out = tempfile::tempdir().unwrap();
        let image = out.path().join("sd.img");
        let error = write_sd_image(
            &image,
            b"kernel",
            Some(firmware.path()),
            BootConfig::default(),
        )
        .unwrap_err();
        assert!(
            matches!(
                error,
                FlashError::MissingFirmware {
                    file: "fixup4.dat",
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("fixup4.dat"));
        assert!(!image.exists());
    }
}
