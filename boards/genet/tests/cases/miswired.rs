//! Drivers with one register offset wrong: the model must catch every one.

use crate::*;

/// The access stream of a driver with one wrong register offset: every access the
/// driver makes inside `from` lands `shift` bytes further on. Exactly what the model
/// would see if the driver's constant for that register (or that descriptor table)
/// were off by `shift`.
struct Miswired {
    model: Model,
    from: Range<usize>,
    shift: isize,
}

impl Miswired {
    fn at(&self, offset: usize) -> usize {
        if self.from.contains(&offset) {
            offset.wrapping_add_signed(self.shift)
        } else {
            offset
        }
    }
}

impl GenetBus for Miswired {
    fn read(&mut self, offset: usize) -> u32 {
        let offset = self.at(offset);
        self.model.read(offset)
    }

    fn write(&mut self, offset: usize, value: u32) {
        let offset = self.at(offset);
        self.model.write(offset, value)
    }
}

/// Brings a driver up over `bus` and uses it as the kernel does (link, MDIO, three
/// frames each way); returns everything the model and the checks found wrong, and
/// the registers the driver touched.
fn exercise(from: Range<usize>, shift: isize) -> (Vec<String>, BTreeSet<usize>) {
    let (model, memory, cache, delay) = parts();
    let bus = Miswired { model, from, shift };
    let mut genet = match Genet::new(bus, memory, cache, delay, MAC, RgmiiDelays::default()) {
        Ok(genet) => genet,
        Err(error) => return (vec![format!("bring-up failed: {error}")], BTreeSet::new()),
    };
    let mut found = Vec::new();
    let gigabit = Link {
        speed: Speed::Mbps1000,
        full_duplex: true,
    };
    match genet.poll_link() {
        Ok(Some(link)) if link == gigabit => {}
        other => found.push(format!("link: {other:?}")),
    }
    if let Err(error) = genet
        .mdio_write(1, 0x1E, 0x1234)
        .and_then(|()| genet.mdio_read(1, 0x1E))
        .map(|value| assert_eq!(value, 0x1234, "MDIO round trip"))
    {
        found.push(format!("MDIO: {error}"));
    }
    let (model, memory, _) = genet.parts_mut();
    for n in 0..3 {
        if !model.model.deliver(memory, &frame(n), 0) {
            found.push(format!("RX frame {n} not taken by the device"));
        }
    }
    // At most a few: a driver reading the wrong index could otherwise walk the ring.
    let received: Vec<Vec<u8>> = (0..5)
        .map_while(|_| genet.receive().map(|rx| rx.data().to_vec()))
        .collect();
    if received != (0..3).map(frame).collect::<Vec<_>>() {
        found.push(format!(
            "received {} frames, not frames 0..3",
            received.len()
        ));
    }
    for n in 10..13 {
        let data = frame(n);
        if let Err(error) = genet.transmit(data.len(), |buf| buf.copy_from_slice(&data)) {
            found.push(format!("TX frame {n}: {error}"));
        }
    }
    let (model, memory, _) = genet.parts_mut();
    if model.model.complete_tx(memory, 10) != (10..13).map(frame).collect::<Vec<_>>() {
        found.push("the device did not send frames 10..13".into());
    }
    found.extend(model.model.configuration());
    found.extend(model.model.violations.iter().cloned());
    found.extend(memory.cache.lock().unwrap().violations.iter().cloned());
    (found, model.model.accessed.clone())
}

#[test]
fn a_driver_with_one_wrong_offset_is_caught() {
    // UMAC_MAX_FRAME_LEN at 0x0818 instead of 0x0814 (UMAC + 0x014).
    let (found, _) = exercise(UMAC_MAX_FRAME_LEN..UMAC_MAX_FRAME_LEN + 4, 4);
    assert!(
        found.contains(&"write of 0x600 to 0x0818, not a GENET v5 register".to_string()),
        "{found:#?}"
    );
    assert!(
        found.contains(&format!(
            "UMAC_MAX_FRAME_LEN (0x{UMAC_MAX_FRAME_LEN:04x}) is 0x5ee under mask 0xffffffff, expected 0x600"
        )),
        "{found:#?}"
    );
    // The correct driver, through the same harness, leaves nothing to report.
    let (found, _) = exercise(0..0, 0);
    assert_eq!(found, Vec::<String>::new());
}

/// Every register the driver uses, moved one word up and one word down, and each
/// descriptor table moved by one word: the model must catch each of these drivers.
#[test]
fn every_register_offset_of_the_driver_is_checked_by_the_model() {
    let (clean, accessed) = exercise(0..0, 0);
    assert_eq!(clean, Vec::<String>::new());
    let known: HashMap<usize, Register> = registers()
        .into_iter()
        .map(|register| (register.offset, register))
        .collect();
    // The driver uses the registers of every block of the map.
    assert!(accessed.len() >= 40, "{accessed:x?}");
    let mut mutants: Vec<(String, Range<usize>)> = accessed
        .iter()
        .map(|&offset| (known[&offset].name.to_string(), offset..offset + 4))
        .collect();
    for (name, base) in [("RX descriptors", RX_DMA), ("TX descriptors", TX_DMA)] {
        mutants.push((name.into(), base..base + DESCRIPTORS * DESC_SIZE));
    }
    let missed: Vec<String> = mutants
        .into_iter()
        .flat_map(|(name, from)| [(name.clone(), from.clone(), 4), (name, from, -4)])
        .filter(|(_, from, shift)| from.start >= 4 && exercise(from.clone(), *shift).0.is_empty())
        .map(|(name, _, shift)| format!("{name} {shift:+}"))
        .collect();
    assert_eq!(
        missed,
        Vec::<String>::new(),
        "offsets the model did not catch"
    );
}
