//! The task commands of the shell: `run`, `ps`, `cont`, `kill`.

use alloc::format;
use alloc::vec::Vec;
use core::fmt::Write;

use tern_protocol::NodeEvent;

use super::{free_heap, parse_id, SharedTasks, TaskState};
use crate::kernel::Kernel;
use crate::shell::{Command, CommandResult};

/// The task commands on the table `tasks`.
pub fn commands(tasks: &SharedTasks) -> Vec<Command> {
    let usage = format!(
        "{} [--pause-at <percent>]",
        tasks.borrow().catalog().usage()
    );
    let (run_tasks, ps_tasks, cont_tasks, kill_tasks) =
        (tasks.clone(), tasks.clone(), tasks.clone(), tasks.clone());
    alloc::vec![
        Command::new("run", &usage, "start a task", move |k, args, out| {
            run(&run_tasks, k, args, out)
        }),
        Command::new(
            "ps",
            "",
            "list tasks: id, task, progress, state, epoch, global id",
            move |_, _, out| ps(&ps_tasks, out)
        ),
        Command::new(
            "cont",
            "<id>",
            "continue a paused task",
            move |_, args, out| { cont(&cont_tasks, args, out) }
        ),
        Command::new("kill", "<id>", "drop a task", move |k, args, out| {
            kill(&kill_tasks, k, args, out)
        }),
    ]
}

fn run(
    tasks: &SharedTasks,
    kernel: &mut Kernel,
    args: &[&str],
    out: &mut dyn Write,
) -> CommandResult {
    let usage = || {
        format!(
            "usage: run {} [--pause-at <percent>]",
            tasks.borrow().catalog().usage()
        )
    };
    let (task_args, pause_at) = match args {
        [rest @ .., "--pause-at", pct] => (rest, Some(pct)),
        rest => (rest, None),
    };
    if task_args.is_empty() || task_args.contains(&"--pause-at") {
        return Err(usage());
    }
    let pause_at = match pause_at {
        Some(pct) => Some(
            pct.parse::<f64>()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
                .ok_or_else(|| format!("'{pct}' is not a percentage (0 to 100)"))?,
        ),
        None => None,
    };
    let free = free_heap(kernel.board());
    let mut table = tasks.borrow_mut();
    let id = table.start(task_args, pause_at, free, None)?;
    let entry = table.get_mut(id).ok_or("the task vanished")?;
    let _ = writeln!(out, "{} started\r", entry.label());
    let event = NodeEvent::TaskStarted {
        task: entry.task_ref(),
        epoch: entry.epoch,
        requested_by: None,
    };
    drop(table);
    kernel.publish(event);
    Ok(())
}

fn ps(tasks: &SharedTasks, out: &mut dyn Write) -> CommandResult {
    let tasks = tasks.borrow();
    if tasks.entries().is_empty() {
        let _ = writeln!(out, "no tasks\r");
        return Ok(());
    }
    let _ = writeln!(
        out,
        "  id  task        progress  state      epoch  global id\r"
    );
    for e in tasks.entries() {
        let _ = writeln!(
            out,
            "{:>4}  {:<10}  {:>7.1}%  {:<9}  {:>5}  {:016x}\r",
            e.id,
            e.name,
            e.task.progress().percent(),
            e.state,
            e.epoch,
            e.task_id
        );
    }
    Ok(())
}

fn cont(tasks: &SharedTasks, args: &[&str], out: &mut dyn Write) -> CommandResult {
    let id = parse_id(args, "cont <id>")?;
    let mut tasks = tasks.borrow_mut();
    let entry = tasks.get_mut(id).ok_or_else(|| format!("no task {id}"))?;
    match entry.state {
        TaskState::Paused => {
            entry.state = TaskState::Running;
            let _ = writeln!(out, "{} continues\r", entry.label());
            Ok(())
        }
        state => Err(format!("task {id} is {state}, not paused")),
    }
}

fn kill(
    tasks: &SharedTasks,
    kernel: &mut Kernel,
    args: &[&str],
    out: &mut dyn Write,
) -> CommandResult {
    let id = parse_id(args, "kill <id>")?;
    let entry = {
        let mut tasks = tasks.borrow_mut();
        let state = tasks
            .get_mut(id)
            .ok_or_else(|| format!("no task {id}"))?
            .state;
        // Until the receiver answers, the migration decides who owns the task.
        if state == TaskState::Migrating {
            return Err(format!(
                "task {id} is migrating; its owner is being decided"
            ));
        }
        tasks.remove(id).ok_or_else(|| format!("no task {id}"))?
    };
    let _ = writeln!(out, "{} killed\r", entry.label());
    kernel.publish(NodeEvent::TaskKilled {
        task: entry.task_ref(),
        requested_by: None,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::testing::{exec, kernel, run_tasks, FakeBoard};
    use tern_hal::Isa;

    /// More polls than any class S run takes.
    const MAX_POLLS: usize = 1_000_000;

    #[test]
    fn run_is_s_verifies_and_ps_shows_it() {
        let mut kernel = kernel(FakeBoard::leak());
        assert_eq!(exec(&mut kernel, "ps"), "no tasks\r\n");
        assert_eq!(exec(&mut kernel, "run is S"), "task 1 (is S) started\r\n");
        let ps = exec(&mut kernel, "ps");
        assert!(ps.contains("   1  is S            0.0%  running"), "{ps}");
        let out = run_tasks(&mut kernel, MAX_POLLS);
        assert_eq!(out, "task 1 (is S): VERIFICATION SUCCESSFUL\r\n");
        let ps = exec(&mut kernel, "ps");
        assert!(ps.contains("   1  is S          100.0%  verified"), "{ps}");
    }

    #[test]
    fn pause_at_cont_and_kill() {
        let mut kernel = kernel(FakeBoard::leak());
        exec(&mut kernel, "run cg S --pause-at 25");
        exec(&mut kernel, "run is S --pause-at 40.5");
        let out = run_tasks(&mut kernel, MAX_POLLS);
        assert!(out.contains("task 1 (cg S) paused at 25."), "{out}");
        assert!(out.contains("task 2 (is S) paused at 4"), "{out}");
        let ps = exec(&mut kernel, "ps");
        assert_eq!(ps.matches("paused").count(), 2, "{ps}");
        assert_eq!(exec(&mut kernel, "cont 2"), "task 2 (is S) continues\r\n");
        assert_eq!(
            exec(&mut kernel, "cont 2"),
            "error: cont: task 2 is running, not paused\r\n"
        );
        assert_eq!(exec(&mut kernel, "kill 1"), "task 1 (cg S) killed\r\n");
        assert_eq!(exec(&mut kernel, "kill 1"), "error: kill: no task 1\r\n");
        let out = run_tasks(&mut kernel, MAX_POLLS);
        assert_eq!(out, "task 2 (is S): VERIFICATION SUCCESSFUL\r\n");
        assert_eq!(
            exec(&mut kernel, "cont 2"),
            "error: cont: task 2 is verified, not paused\r\n"
        );
        assert_eq!(
            exec(&mut kernel, "cont x"),
            "error: cont: 'x' is not a task id\r\n"
        );
    }

    #[test]
    fn run_rejects_bad_arguments() {
        let mut kernel = kernel(FakeBoard::leak());
        for (line, error) in [
            (
                "run",
                "usage: run <ep|is|cg> <S|W|A|B> [--pause-at <percent>]",
            ),
            ("run mg S", "unknown workload 'mg'"),
            ("run is Z", "unknown class 'Z'"),
            ("run is S --pause-at 150", "'150' is not a percentage"),
            ("run is S --stop 50", "<ep|is|cg> <S|W|A|B> expected"),
        ] {
            let out = exec(&mut kernel, line);
            assert!(
                out.starts_with("error: run: ") && out.contains(error),
                "{line}: {out}"
            );
        }
        assert_eq!(exec(&mut kernel, "ps"), "no tasks\r\n");
    }

    #[test]
    fn run_refuses_a_class_that_does_not_fit_the_heap() {
        let mut kernel = kernel(FakeBoard::leak_with(Isa::X86_64, "pc", 16 << 20));
        // IS W needs 12 MiB: it fits in the 15 MiB free; CG A does not.
        assert_eq!(exec(&mut kernel, "run is W"), "task 1 (is W) started\r\n");
        let out = exec(&mut kernel, "run cg A");
        assert!(
            out.starts_with("error: run: cg A needs ")
                && out.ends_with(" KiB of memory, the heap has 15360 KiB free\r\n"),
            "{out}"
        );
        assert_eq!(exec(&mut kernel, "kill 2"), "error: kill: no task 2\r\n");
    }
}
