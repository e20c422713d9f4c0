//! Frames through the receive and transmit rings, their wraps and their errors.

use crate::*;

#[test]
fn rx_hands_out_frames_across_ring_and_index_wrap() {
    // The producer index starts near 2^16, so it wraps during the test.
    let mut genet = start(|m| m.rx_prod = 0xFF80).unwrap();
    let (model, memory, _) = genet.parts_mut();
    assert!(
        !model.deliver(memory, &frame(0), 0),
        "RX must be off before the link"
    );
    link_up(&mut genet);
    let mut received = 0;
    let mut delivered = 0;
    for round in 0..6 {
        // Fill the whole ring (256 frames), one more is dropped by the device.
        let (model, memory, _) = genet.parts_mut();
        for _ in 0..256 {
            assert!(model.deliver(memory, &frame(delivered), 0));
            delivered += 1;
        }
        assert!(
            !model.deliver(memory, &frame(0), 0),
            "round {round}: ring full"
        );
        while let Some(rx) = genet.receive() {
            assert_eq!(rx.data(), frame(received).as_slice());
            received += 1;
        }
        assert_eq!(received, delivered);
    }
    assert_eq!(genet.stats().rx_frames, 1536);
    assert_eq!(genet.parts_mut().0.rx_cons(), 0xFF80u16.wrapping_add(1536));
    no_violations(&mut genet);
}

#[test]
fn error_frames_are_counted_and_dropped() {
    let mut genet = start(|_| {}).unwrap();
    link_up(&mut genet);
    let (model, memory, _) = genet.parts_mut();
    for (n, status) in [(1, 0x02), (2, 0), (3, 0x01), (4, 0x10), (5, 0), (6, 0x04)] {
        assert!(model.deliver(memory, &frame(n), status));
    }
    // A frame without EOP (spread over buffers) is dropped too.
    assert!(model.deliver(memory, &frame(7), 0));
    let desc = RX_DMA + 6 * DESC_SIZE + DESC_LENGTH_STATUS;
    model.regs[desc / 4] &= !0x4000;
    let mut good = Vec::new();
    while let Some(rx) = genet.receive() {
        good.push(rx.data().to_vec());
    }
    assert_eq!(good, vec![frame(2), frame(5)]);
    let stats = genet.stats();
    assert_eq!((stats.rx_frames, stats.rx_errors), (2, 5));
    assert_eq!(genet.parts_mut().0.rx_cons(), 7);
    no_violations(&mut genet);
}

#[test]
fn tx_queues_frames_across_ring_and_index_wrap() {
    let mut genet = start(|m| m.tx_cons = 0xFFA0).unwrap();
    link_up(&mut genet);
    let mut sent = Vec::new();
    for n in 0..700 {
        let data = frame(n);
        genet
            .transmit(data.len(), |buf| buf.copy_from_slice(&data))
            .unwrap();
        if n % 100 == 99 {
            let (model, memory, _) = genet.parts_mut();
            sent.extend(model.complete_tx(memory, usize::MAX));
        }
    }
    let expected: Vec<_> = (0..700).map(frame).collect();
    assert_eq!(sent, expected);
    assert_eq!(genet.reclaim_tx(), 100);
    assert_eq!(genet.tx_in_flight(), 0);
    assert_eq!(genet.parts_mut().0.tx_prod(), 0xFFA0u16.wrapping_add(700));
    no_violations(&mut genet);
}

#[test]
fn tx_ring_full_short_frames_and_bad_lengths() {
    let mut genet = start(|_| {}).unwrap();
    link_up(&mut genet);
    assert_eq!(genet.transmit(0, |_| {}), Err(Error::BadLength(0)));
    assert_eq!(genet.transmit(1537, |_| {}), Err(Error::BadLength(1537)));
    for _ in 0..256 {
        genet.transmit(20, |buf| buf.fill(0xAB)).unwrap();
    }
    assert_eq!(genet.transmit(20, |_| {}), Err(Error::TxRingFull));
    let (model, memory, _) = genet.parts_mut();
    let sent = model.complete_tx(memory, 1);
    let mut padded = vec![0xAB; 20];
    padded.resize(60, 0);
    assert_eq!(sent, vec![padded]);
    // The one freed descriptor is reclaimed and reused.
    genet.transmit(60, |buf| buf.fill(1)).unwrap();
    assert_eq!(genet.tx_in_flight(), 256);
    no_violations(&mut genet);
}
