//! Task modules over the control service: a peer's upload checked and kept
//! by the board's catalog (the server's side), and the push of a task's
//! module to a peer before a migration or a sync sends its checkpoint (the
//! sender's side). The catalog decides what a module is; the kernel only
//! moves bytes and answers.

use alloc::string::{String, ToString};

use tern_protocol::module::MAX_MODULE_BYTES;
use tern_protocol::{Message, ModuleError, ModulePush, ModuleUpload, NodeEvent};

use super::link::PeerConn;
use super::{Context, ControlError, LOW_WATER};
use crate::kernel::Turn;
use crate::tasks::free_heap;

/// A module arriving on a server connection.
#[derive(Default)]
pub(super) struct Incoming(ModuleUpload);

/// Answers `ModuleQuery`.
pub(super) fn held(ctx: &Context, module: [u8; 32]) -> Message {
    let held = ctx.tasks.borrow().catalog().module(&module).is_some();
    Message::ModuleHeld { module, held }
}

impl Incoming {
    /// Takes one `ModulePart` from `peer`; after the last, hands the module
    /// to the catalog and returns the answer with its verdict (also an
    /// event); `None` while more parts are due.
    pub(super) fn part(
        &mut self,
        ctx: &Context,
        turn: &mut Turn<'_>,
        peer: &str,
        (offset, total_len, bytes): (u64, u64, &[u8]),
    ) -> Option<Message> {
        // The module, its compiled form and a task's memory share the heap.
        let max_len = MAX_MODULE_BYTES.min(free_heap(ctx.board) / 4);
        let module = match self.0.part(offset, total_len, bytes, max_len) {
            Ok(None) => return None,
            Ok(Some(module)) => module,
            Err(e) => {
                let reason = match e {
                    ModuleError::TooLarge(_) => tern_protocol::ModuleRefusal::TooLarge,
                    ModuleError::OutOfMemory => tern_protocol::ModuleRefusal::OutOfMemory,
                    _ => tern_protocol::ModuleRefusal::Malformed,
                };
                return Some(refused(turn, peer, reason, e.to_string()));
            }
        };
        let added = ctx.tasks.borrow().catalog().add_module(&module);
        Some(match added {
            Ok(id) => {
                turn.publish(NodeEvent::ModuleAdded {
                    module: id,
                    len: module.len() as u64,
                    from: peer.into(),
                });
                Message::ModuleStored { module: id }
            }
            Err((reason, detail)) => refused(turn, peer, reason, detail),
        })
    }
}

/// A refusal: its event, and the answer.
fn refused(
    turn: &mut Turn<'_>,
    peer: &str,
    reason: tern_protocol::ModuleRefusal,
    detail: String,
) -> Message {
    turn.publish(NodeEvent::ModuleRefused {
        reason,
        detail: detail.clone(),
        from: peer.into(),
    });
    Message::ModuleRejected { reason, detail }
}

/// The push of a task's module on an outgoing connection.
pub(super) struct Push(ModulePush);

impl Push {
    /// The push of task `local_id`'s module, if its code is one, with its
    /// query sent on `conn`.
    pub(super) fn start(
        ctx: &Context,
        local_id: u32,
        conn: &mut PeerConn,
    ) -> Result<Option<Self>, ControlError> {
        let module = {
            let mut tasks = ctx.tasks.borrow_mut();
            let Some(id) = tasks.get_mut(local_id).and_then(|e| e.task.module()) else {
                return Ok(None);
            };
            let bytes = tasks.catalog().module(&id);
            (id, bytes)
        };
        let (id, Some(bytes)) = module else {
            return Err(ControlError::Task(
                "the task's module is no longer held here".to_string(),
            ));
        };
        let push = ModulePush::new(id, bytes);
        conn.send(&push.query())?;
        Ok(Some(Self(push)))
    }

    /// The peer's answer; `Ok(true)` once it holds the module.
    pub(super) fn on_message(&mut self, msg: Message) -> Result<bool, ControlError> {
        self.0.on_message(msg).map_err(ControlError::Module)
    }

    /// Sends the next parts while the connection's backlog allows.
    pub(super) fn feed(&mut self, conn: &mut PeerConn) -> Result<bool, ControlError> {
        let mut sent = false;
        while conn.backlog() < LOW_WATER {
            let Some(msg) = self.0.poll_send() else {
                break;
            };
            conn.send(&msg)?;
            sent = true;
        }
        Ok(sent)
    }
}
