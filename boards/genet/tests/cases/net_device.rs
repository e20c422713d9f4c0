//! The driver through `GenetNet`, the kernel's `NetDevice` view.

use crate::*;

/// A clock the test moves by hand.
struct TestClock(AtomicU64);

impl MonotonicClock for TestClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    fn counter_hz(&self) -> u64 {
        1_000_000_000
    }
}

impl TestClock {
    fn advance(&self, ns: u64) {
        self.0.fetch_add(ns, Ordering::SeqCst);
    }
}

type Net = GenetNet<Model, TestMemory, TestCache, TestDelay>;

fn net(configure: impl FnOnce(&mut Model)) -> (Net, &'static TestClock) {
    let clock: &'static TestClock = Box::leak(Box::new(TestClock(AtomicU64::new(7))));
    (GenetNet::new(start(configure).unwrap(), MAC, clock), clock)
}

#[test]
fn net_device_follows_the_link_on_its_poll_interval() {
    let (mut net, clock) = net(|m| m.phy.link_up = false);
    assert_eq!(net.mac_address(), MAC);
    assert_eq!(net.max_frame_len(), 1514);
    assert!(!net.link_up());
    assert!(!net.can_transmit());
    assert_eq!(net.transmit(&frame(1)), Err(NetError::Busy));
    net.genet().parts_mut().0.phy.link_up = true;
    // The PHY is read again only once the interval has passed.
    clock.advance(LINK_POLL_INTERVAL_NS - 1);
    assert!(!net.can_transmit());
    clock.advance(1);
    assert!(net.can_transmit());
    assert!(net.link_up());
    assert_eq!(
        net.genet().link().map(|link| link.speed),
        Some(Speed::Mbps1000)
    );
    no_violations(net.genet());
}

#[test]
fn net_device_moves_frames_and_checks_lengths() {
    let (mut net, _) = net(|_| {});
    assert!(net.link_up());
    net.transmit(&frame(3)).unwrap();
    let (model, memory, _) = net.genet().parts_mut();
    assert_eq!(model.complete_tx(memory, 10), vec![frame(3)]);
    assert!(model.deliver(memory, &frame(4), 0));
    assert!(model.deliver(memory, &frame(5), 0));
    let mut buf = [0u8; 1514];
    let len = net.receive(&mut buf).expect("frame 4").len;
    assert_eq!(&buf[..len], frame(4).as_slice());
    // A frame longer than the caller's buffer is dropped, and its buffer returned.
    assert_eq!(net.receive(&mut [0u8; 10]), None);
    assert_eq!(net.receive(&mut buf), None);
    assert_eq!(net.genet().parts_mut().0.rx_cons(), 2);
    assert_eq!(net.transmit(&[]), Err(NetError::BadLength(0)));
    assert_eq!(net.transmit(&[0; 1515]), Err(NetError::BadLength(1515)));
    no_violations(net.genet());
}

#[test]
fn net_device_reports_a_full_ring_as_busy_and_recovers() {
    let (mut net, _) = net(|_| {});
    for n in 0..256 {
        net.transmit(&frame(n)).unwrap();
    }
    assert!(!net.can_transmit());
    assert_eq!(net.transmit(&frame(0)), Err(NetError::Busy));
    let (model, memory, _) = net.genet().parts_mut();
    assert_eq!(model.complete_tx(memory, 1), vec![frame(0)]);
    assert!(net.can_transmit());
    net.transmit(&frame(256)).unwrap();
    no_violations(net.genet());
}

#[test]
fn net_device_counts_an_mdio_failure_as_link_down() {
    let (mut net, clock) = net(|_| {});
    assert!(net.link_up());
    net.genet().parts_mut().0.mdio_stuck = true;
    clock.advance(LINK_POLL_INTERVAL_NS);
    assert!(!net.can_transmit());
    assert!(!net.link_up());
    assert!(matches!(net.last_error(), Some(Error::MdioTimeout { .. })));
    let model = net.genet().parts_mut().0;
    model.mdio_stuck = false;
    model.mdio_busy_left = 0;
    model.regs[MDIO_CMD / 4] &= !MDIO_START_BUSY;
    clock.advance(LINK_POLL_INTERVAL_NS);
    assert!(net.can_transmit());
    assert_eq!(net.last_error(), None);
    no_violations(net.genet());
}
