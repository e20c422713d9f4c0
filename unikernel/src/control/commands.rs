//! The control service's shell commands: `key`, `migrate`, `sync`, `codec`,
//! `peers`.

use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt::Write;

use tern_protocol::{Psk, Security};

use super::{parse_key, CodecMode, Control};
use crate::kernel::Kernel;
use crate::shell::{Command, CommandResult};
use crate::tasks::parse_id;

/// The commands on the shared `control`.
pub(super) fn commands(control: &Rc<RefCell<Control>>) -> Vec<Command> {
    let (key, migrate, sync, codec, peers) = (
        control.clone(),
        control.clone(),
        control.clone(),
        control.clone(),
        control.clone(),
    );
    alloc::vec![
        Command::new(
            "key",
            "[<64 hex digits>|insecure]",
            "show or set the cluster key for migration",
            move |_, args, out| key_command(&key, args, out)
        ),
        Command::new(
            "migrate",
            "<id> <address>[:port]|<node id>",
            "live-migrate a task to another node",
            move |k, args, out| migrate_command(&migrate, k, args, out)
        ),
        Command::new(
            "sync",
            SYNC_USAGE,
            "keep a standby of a task on another node; stop it; list sessions; show or set the lease",
            move |k, args, out| sync_command(&sync, k, args, out)
        ),
        Command::new(
            "codec",
            "[adaptive|none|lz4|zstd-1|zstd-3|zstd-9]",
            "show or set how migrations and syncs started here compress",
            move |_, args, out| codec_command(&codec, args, out)
        ),
        Command::new(
            "peers",
            "",
            "list the nodes heard on the LAN (their beacons)",
            move |k, _, out| {
                let now_ns = k.board().clock().now_ns();
                peers.borrow().print_peers(now_ns, out);
                Ok(())
            }
        ),
    ]
}

fn key_command(control: &RefCell<Control>, args: &[&str], out: &mut dyn Write) -> CommandResult {
    let mut control = control.borrow_mut();
    match args {
        [] => {
            let _ = writeln!(
                out,
                "key: {}\r",
                match control.security() {
                    Some(Security::Key(_)) => "set",
                    Some(Security::ExplicitlyInsecure) => "insecure (WARNING: INSECURE MODE)",
                    None => "none (migration refused)",
                }
            );
        }
        ["insecure"] => {
            control.set_security(Some(Security::ExplicitlyInsecure));
            // The kernels link a defmt logger; host tests do not.
            #[cfg(target_os = "none")]
            defmt::warn!("INSECURE MODE: migration channels use the public all-zero key");
            let _ = writeln!(
                out,
                "WARNING: INSECURE MODE: migration channels are neither authenticated nor secret (public all-zero key)\r"
            );
        }
        [hex] => {
            // The key is never echoed: an error names only its shape.
            let key = parse_key(hex).ok_or("a key is 64 hexadecimal digits (32 bytes)")?;
            control.set_security(Some(Security::Key(Psk(key))));
            let _ = writeln!(out, "key: set\r");
        }
        _ => return Err("usage: key [<64 hex digits>|insecure]".into()),
    }
    Ok(())
}

fn codec_command(control: &RefCell<Control>, args: &[&str], out: &mut dyn Write) -> CommandResult {
    const USAGE: &str = "usage: codec [adaptive|none|lz4|zstd-1|zstd-3|zstd-9]";
    let mut control = control.borrow_mut();
    match args {
        [] => {}
        [name] => control.set_codec_mode(CodecMode::parse(name).ok_or(USAGE)?),
        _ => return Err(USAGE.into()),
    }
    let _ = writeln!(out, "codec: {}\r", control.codec_mode());
    Ok(())
}

fn migrate_command(
    control: &RefCell<Control>,
    kernel: &mut Kernel,
    args: &[&str],
    out: &mut dyn Write,
) -> CommandResult {
    const USAGE: &str = "usage: migrate <id> <address>[:port]|<node id>";
    let [id, to] = args else {
        return Err(USAGE.into());
    };
    let id = parse_id(&[id], USAGE)?;
    let to = control.borrow().resolve(to).map_err(|e| e.to_string())?;
    let line = kernel
        .with_turn(|turn| control.borrow_mut().migrate(id, to, turn))
        .map_err(|e| e.to_string())?;
    let _ = writeln!(out, "{line}\r");
    Ok(())
}

/// Arguments of `sync`.
const SYNC_USAGE: &str = "[<id> <address>[:port]|<node id> | stop <id> | lease [<ms>]]";

fn sync_command(
    control: &RefCell<Control>,
    kernel: &mut Kernel,
    args: &[&str],
    out: &mut dyn Write,
) -> CommandResult {
    let usage = || String::from("usage: sync ") + SYNC_USAGE;
    let now_ns = kernel.board().clock().now_ns();
    match args {
        [] => control.borrow_mut().print_sync(now_ns, out),
        ["stop", id] => {
            let id = parse_id(&[id], &usage())?;
            kernel
                .with_turn(|turn| control.borrow_mut().stop_sync(id, turn))
                .map_err(|e| e.to_string())?;
        }
        ["lease"] => {
            let ms = control.borrow().lease_ns() / 1_000_000;
            let _ = writeln!(out, "sync: lease {ms} ms\r");
        }
        ["lease", ms] => {
            let ms: u64 = ms
                .parse()
                .ok()
                .filter(|&ms| ms > 0)
                .ok_or("a lease is a positive number of milliseconds")?;
            control
                .borrow_mut()
                .set_lease_ns(ms.saturating_mul(1_000_000));
            let _ = writeln!(out, "sync: lease {ms} ms\r");
        }
        [id, to] => {
            let id = parse_id(&[id], &usage())?;
            let to = control.borrow().resolve(to).map_err(|e| e.to_string())?;
            let line = control
                .borrow_mut()
                .sync(id, to, now_ns)
                .map_err(|e| e.to_string())?;
            let _ = writeln!(out, "{line}\r");
        }
        _ => return Err(usage()),
    }
    Ok(())
}
