//! The linearizability scenario in its CI form, on both backends: the
//! recorded history of concurrent clients under faults must have a
//! linearization on every key. The etcd test needs a real etcd and fails
//! (never skips) without one.

use wasmkube_e2e::Backend;
use wasmkube_reliability::linearizability::{self, Input, Limits, Op, Output};
use wasmkube_reliability::linearizable_store::{Shape, run_backend};
use wasmkube_reliability::report::Mode;

fn ci_mode(name: &str) -> Mode {
    Mode {
        ci: true,
        work_dir: std::env::temp_dir().join(format!("wasmkube-linearizability-{name}")),
        seed: 0x11ea_2024,
    }
}

fn linearizable_under_faults(backend: Backend, name: &str) -> anyhow::Result<()> {
    let mode = ci_mode(name);
    let run = run_backend(&mode, backend, Shape::for_mode(&mode))?;
    let notes = run.notes.join("\n");
    eprintln!("{name}: {notes}");
    assert!(run.faults > 0, "no fault was injected: {notes}");
    assert!(run.ops() > 0, "no operation was checked: {notes}");
    assert_eq!(run.violations(), 0, "not linearizable:\n{notes}");
    assert_eq!(run.undecided(), 0, "the checker could not decide:\n{notes}");
    assert!(
        run.odd.is_empty(),
        "answers no correct server gives:\n{notes}"
    );
    // The checker has teeth on this very history: a stale read planted in
    // it is found.
    let mut planted = 0;
    for history in &run.histories {
        if let Some(stale) = plant_stale_read(history) {
            let report = linearizability::check(&stale, Limits::default());
            assert_eq!(
                report.violations().count(),
                1,
                "a planted stale read went unnoticed"
            );
            planted += 1;
        }
    }
    assert!(planted > 0, "no place to plant a stale read: {notes}");
    Ok(())
}

/// `history` with one read turned stale: a get that started after an
/// acknowledged write `w2` now returns the value (and rv) of an
/// acknowledged write `w1` that returned before `w2` was called. Values are
/// unique, so no order explains it.
fn plant_stale_read(history: &[Op]) -> Option<Vec<Op>> {
    let acked = |o: &Op| match (o.input, o.ret) {
        (
            Input::Create { value } | Input::Update { value, .. },
            Some((t, Output::Written { rv })),
        ) => Some((value, rv, t)),
        _ => None,
    };
    for w1 in history {
        let Some((v1, rv1, w1_ret)) = acked(w1) else {
            continue;
        };
        let Some(w2_ret) = history
            .iter()
            .filter(|w2| w2.key == w1.key && w2.call > w1_ret)
            .filter_map(|w2| acked(w2).map(|(_, _, t)| t))
            .min()
        else {
            continue;
        };
        let Some(g) = history.iter().position(|g| {
            g.key == w1.key && g.call > w2_ret && matches!(g.ret, Some((_, Output::Found { .. })))
        }) else {
            continue;
        };
        let mut stale = history.to_vec();
        if let Some((t, _)) = stale[g].ret {
            stale[g].ret = Some((t, Output::Found { value: v1, rv: rv1 }));
        }
        return Some(stale);
    }
    None
}

#[test]
fn embedded_store_is_linearizable_under_server_kills() -> anyhow::Result<()> {
    linearizable_under_faults(Backend::Embedded, "embedded")
}

#[test]
fn etcd_store_is_linearizable_under_member_and_server_kills() -> anyhow::Result<()> {
    linearizable_under_faults(Backend::Etcd, "etcd")
}
