//! Network consoles: a server connection that sent `ConsoleOpen` carries one
//! of the kernel's remote consoles (`crate::kernel::RemoteConsoles`): its
//! `ConsoleInput` goes to the console's line editor, the kernel runs the
//! finished lines with the same shell as the serial console, and the text
//! that comes out (echo, answers, the node's log lines) goes back in
//! `ConsoleOutput` messages. Only an authenticated peer gets this far: the
//! connection's handshake proved the cluster key.

use tern_protocol::{Message, NackReason, MAX_CONSOLE_INPUT};

use super::link::Link;
use super::{Context, LOW_WATER};
use crate::kernel::SharedConsole;

/// Opens a console for the peer `peer` of a server connection.
pub(super) fn open(ctx: &Context, peer: &str) -> SharedConsole {
    let facts = ctx.board.facts();
    let greeting = alloc::format!(
        "{} (network console from {peer}; the shell of node {})",
        crate::banner(&facts),
        tern_protocol::format_node_id(ctx.node_id)
    );
    ctx.consoles.open(&greeting)
}

/// What to answer a `ConsoleInput` of `bytes` on a connection whose console
/// is `console`: nothing once queued, or a refusal.
pub(super) fn input(console: Option<&SharedConsole>, bytes: &[u8]) -> Option<Message> {
    match console {
        Some(console) if bytes.len() <= MAX_CONSOLE_INPUT => {
            console.borrow_mut().push_input(bytes);
            None
        }
        Some(_) => Some(Message::Nack(NackReason::TooLarge)),
        None => Some(Message::Nack(NackReason::UnexpectedMessage)),
    }
}

/// Sends the console's new output on `link` while the peer keeps up;
/// whether it sent anything.
pub(super) fn feed(console: &SharedConsole, link: &mut Link) -> bool {
    if link.backlog() >= LOW_WATER {
        // A slow reader: the output waits (bounded) in the console.
        return false;
    }
    let text = console.borrow_mut().take_output();
    !text.is_empty() && link.send(&Message::ConsoleOutput { text }).is_ok()
}
