//! Gradient checkpointing (JAX's `checkpoint` / `remat`, PyTorch's non-reentrant
//! `torch.utils.checkpoint`): inside [`checkpoint`] the graph is recorded as usual, so
//! gradients reach the inputs and every tensor `f` captures, but the nodes keep none of the
//! values that `f` computed for their VJPs, except those the [`CheckpointPolicy`] keeps.
//! The first VJP that reads a dropped value replays the region's recorded primitives (each
//! node carries everything needed to run its primitive again) on the device, from the
//! region's inputs and kept values, and the values are freed once every node that read
//! them has run its VJP.
//!
//! The replay binds the primitives under whatever transforms are active then, so second
//! order (a taped backward, forward-over-reverse HVPs, Hessians) recomputes inside the
//! recomputation, and vmap levels batch the replay as they batched the forward. Random
//! values are inputs of the ops that use them (dropout's mask is drawn from its seed and
//! held), so a replay sees the same sample.
use crate::graph::Node;
use crate::primitive::{bind, Identity, Primitive};
use crate::{transform, Result, Tensor};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// Which values computed inside a checkpointed function stay saved for the backward pass.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum CheckpointPolicy {
    /// Nothing (JAX's `nothing_saveable`): the backward pass recomputes everything.
    #[default]
    Nothing,
    /// The outputs of matrix products (JAX's `dots_saveable`): the replay recomputes the
    /// cheap elementwise work between them and never a matmul.
    Matmuls,
    /// The values marked with [`checkpoint_name`] under one of these names (JAX's
    /// `save_only_these_names`).
    Names(Vec<String>),
}

/// Where a replayed primitive gets an input from.
pub(crate) enum Source {
    /// The output of an earlier primitive of the region.
    Entry(usize),
    /// A value from outside the region (an input, a captured tensor, a constant), held.
    Held(Tensor),
}

/// One primitive recorded inside a region.
struct Entry {
    op: Arc<dyn Primitive>,
    inputs: Vec<Source>,
    /// The output, where the policy keeps it: the data and tangents, and its node held
    /// weakly (the node may own the region).
    kept: Option<(Tensor, Weak<Node>)>,
    /// Saved inputs the node dropped, and whether it dropped its saved output.
    dropped_inputs: Vec<usize>,
    dropped_output: bool,
}

/// The primitives recorded inside one call of [`checkpoint`], in order.
pub(crate) struct Region {
    policy: CheckpointPolicy,
    entries: Mutex<Vec<Entry>>,
    index_of: Mutex<HashMap<u64, usize>>,
    /// The values of the last replay that nodes still have to read.
    replayed: Mutex<Option<Replay>>,
}

/// The values of one replay: each dropped value until every node that reads it has run
/// its VJP.
struct Replay {
    values: Vec<Option<Tensor>>,
    /// Nodes (by entry) that have yet to read each value.
    readers_left: Vec<usize>,
    /// Whether each entry's node has run its VJP since this replay.
    done: Vec<bool>,
}

thread_local! {
    static ACTIVE: RefCell<Vec<Arc<Region>>> = const { RefCell::new(Vec::new()) };
}

/// The region recording on this thread, if any.
pub(crate) fn active() -> Option<Arc<Region>> {
    ACTIVE.with(|a| a.borrow().last().cloned())
}

struct Pop;
impl Drop for Pop {
    fn drop(&mut self) {
        ACTIVE.with(|a| a.borrow_mut().pop());
    }
}

/// Run `f` with no region recording (a replay: its primitives are ordinary nodes).
fn outside_regions<R>(f: impl FnOnce() -> R) -> R {
    let saved = ACTIVE.with(|a| std::mem::take(&mut *a.borrow_mut()));
    struct Restore(Vec<Arc<Region>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let v = std::mem::take(&mut self.0);
            ACTIVE.with(|a| *a.borrow_mut() = v);
        }
    }
    let _restore = Restore(saved);
    f()
}

/// What `record` must know to build a node inside a region.
pub(crate) struct Recorded {
    /// Which saved inputs to keep (the others are dropped and replayed).
    pub keep_input: Vec<bool>,
    /// Whether to keep the saved output.
    pub keep_output: bool,
}

impl Region {
    fn new(policy: CheckpointPolicy) -> Region {
        Region {
            policy,
            entries: Mutex::new(Vec::new()),
            index_of: Mutex::new(HashMap::new()),
            replayed: Mutex::new(None),
        }
    }

    fn keeps(&self, op: &dyn Primitive) -> bool {
        match &self.policy {
            CheckpointPolicy::Nothing => false,
            CheckpointPolicy::Matmuls => op.is_matmul(),
            CheckpointPolicy::Names(names) => op.checkpoint_name().is_some_and(|n| names.iter().any(|m| m == n)),
        }
    }

    fn source(&self, t: &Tensor) -> Source {
        let index = t.node().and_then(|n| crate::lock(&self.index_of).get(&n.id()).copied());
        match index {
            Some(j) => Source::Entry(j),
            None => Source::Held(t.clone()),
        }
    }

    /// Decide what a node recorded inside this region keeps: values from outside the region
    /// and values the policy keeps stay saved; the rest are dropped.
    pub(crate) fn plan(&self, op: &Arc<dyn Primitive>, inputs: &[&Tensor]) -> (Vec<Source>, Recorded) {
        let sources: Vec<Source> = inputs.iter().map(|t| self.source(t)).collect();
        let entries = crate::lock(&self.entries);
        let keep_input = sources
            .iter()
            .enumerate()
            .map(|(i, s)| match s {
                _ if !op.saves_input(i) => false,
                Source::Held(_) => true,
                Source::Entry(j) => entries[*j].kept.is_some(),
            })
            .collect();
        let keep_output = op.saves_output() && self.keeps(op.as_ref());
        (sources, Recorded { keep_input, keep_output })
    }

    /// How many primitives the region has recorded (the index of the next one).
    pub(crate) fn len(&self) -> usize {
        crate::lock(&self.entries).len()
    }

    /// Register the node just built from `plan`; the index it has in the region.
    pub(crate) fn push(&self, node: &Arc<Node>, out: &Tensor, sources: Vec<Source>, recorded: &Recorded) -> usize {
        let op = node.op.clone();
        let dropped_inputs = (0..sources.len()).filter(|&i| op.saves_input(i) && !recorded.keep_input[i]).collect();
        let dropped_output = op.saves_output() && !recorded.keep_output;
        let kept = self.keeps(op.as_ref()).then(|| (out.with_node(None), Arc::downgrade(node)));
        let mut entries = crate::lock(&self.entries);
        let index = entries.len();
        entries.push(Entry { op, inputs: sources, kept, dropped_inputs, dropped_output });
        crate::lock(&self.index_of).insert(node.id(), index);
        index
    }

    /// The entries whose outputs the node at `index` reads from a replay.
    fn reads(e: &Entry, index: usize) -> Vec<usize> {
        let mut r: Vec<usize> = e
            .dropped_inputs
            .iter()
            .filter_map(|&i| match e.inputs[i] {
                Source::Entry(j) => Some(j),
                Source::Held(_) => None,
            })
            .collect();
        if e.dropped_output {
            r.push(index);
        }
        r.sort_unstable();
        r.dedup();
        r
    }

    /// Replay what the dropped values need (once per backward pass; later readers share
    /// it). Values needed only to compute others are freed at once.
    fn replay(&self) -> Result<()> {
        let entries = crate::lock(&self.entries);
        let n = entries.len();
        // what is read: every dropped value; what is needed: those, then, walking back,
        // the inputs of what is needed and not kept
        let mut readers_left = vec![0usize; n];
        for (k, e) in entries.iter().enumerate() {
            for j in Self::reads(e, k) {
                readers_left[j] += 1;
            }
        }
        let mut needed: Vec<bool> = readers_left.iter().map(|&r| r > 0).collect();
        for k in (0..n).rev() {
            if needed[k] && entries[k].kept.is_none() {
                for s in &entries[k].inputs {
                    if let Source::Entry(j) = s {
                        needed[*j] = true;
                    }
                }
            }
        }
        let mut values: Vec<Option<Tensor>> = vec![None; n];
        outside_regions(|| -> Result<()> {
            for k in 0..n {
                if !needed[k] {
                    continue;
                }
                let e = &entries[k];
                values[k] = Some(match &e.kept {
                    Some((t, node)) => t.with_node(node.upgrade()),
                    None => {
                        let inputs: Vec<Tensor> = e
                            .inputs
                            .iter()
                            .map(|s| match s {
                                Source::Held(t) => t.clone(),
                                Source::Entry(j) => values[*j].clone().expect("replayed in order"),
                            })
                            .collect();
                        let refs: Vec<&Tensor> = inputs.iter().collect();
                        count_replay(e.op.as_ref());
                        bind(e.op.clone(), &refs)?
                    }
                });
            }
            Ok(())
        })?;
        for (v, &r) in values.iter_mut().zip(&readers_left) {
            if r == 0 {
                *v = None;
            }
        }
        *crate::lock(&self.replayed) = Some(Replay { values, readers_left, done: vec![false; n] });
        Ok(())
    }

    /// Input `i` of the entry at `index`, from the replay.
    pub(crate) fn input(&self, index: usize, i: usize) -> Result<Tensor> {
        let source = match &crate::lock(&self.entries)[index].inputs[i] {
            Source::Held(t) => return Ok(t.clone()),
            Source::Entry(j) => *j,
        };
        self.value(source)
    }

    /// The output of the entry at `index`, from the replay (replayed now if no replay
    /// holds it).
    pub(crate) fn value(&self, index: usize) -> Result<Tensor> {
        let held = |r: &Option<Replay>| r.as_ref().and_then(|r| r.values[index].clone());
        if let Some(v) = held(&crate::lock(&self.replayed)) {
            return Ok(v);
        }
        self.replay()?;
        Ok(held(&crate::lock(&self.replayed)).expect("a dropped value is replayed"))
    }

    /// The node at `index` has run its VJP (or will not run it in this backward pass):
    /// the replayed values no other node still reads are freed.
    pub(crate) fn done(&self, index: usize) {
        let reads = Self::reads(&crate::lock(&self.entries)[index], index);
        let mut replayed = crate::lock(&self.replayed);
        let Some(r) = replayed.as_mut() else { return };
        if std::mem::replace(&mut r.done[index], true) {
            return;
        }
        for j in reads {
            r.readers_left[j] = r.readers_left[j].saturating_sub(1);
            if r.readers_left[j] == 0 {
                r.values[j] = None;
            }
        }
        if r.values.iter().all(|v| v.is_none()) {
            *replayed = None;
        }
    }
}

/// A node's link to the region it was recorded in (weak: the region's kept values hold
/// their nodes; the checkpoint's outputs hold the region).
pub(crate) type RegionLink = (Weak<Region>, usize);

pub(crate) fn region_gone() -> crate::Error {
    crate::Error::Invalid {
        op: "checkpoint",
        msg: "a value inside a checkpointed function outlived the function's outputs and cannot be replayed".into(),
    }
}

/// What checkpoint replays have recomputed on this thread (subtract two readings).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayCount {
    /// Primitives run again.
    pub ops: u64,
    /// Of those, matrix products.
    pub matmuls: u64,
}

thread_local! {
    static REPLAYED: std::cell::Cell<ReplayCount> = const { std::cell::Cell::new(ReplayCount { ops: 0, matmuls: 0 }) };
}

fn count_replay(op: &dyn Primitive) {
    REPLAYED.with(|c| {
        let mut n = c.get();
        n.ops += 1;
        n.matmuls += op.is_matmul() as u64;
        c.set(n);
    });
}

/// What checkpoint replays have recomputed on this thread so far (to see what a policy
/// recomputes).
pub fn checkpoint_replays() -> ReplayCount {
    REPLAYED.with(|c| c.get())
}

/// Run `f` on `xs` saving nothing it computes for the backward pass (the default policy,
/// [`CheckpointPolicy::Nothing`]); see [`checkpoint_with`].
pub fn checkpoint<F>(f: F, xs: &[Tensor]) -> Result<Vec<Tensor>>
where
    F: FnOnce(&[Tensor]) -> Result<Vec<Tensor>>,
{
    checkpoint_with(CheckpointPolicy::Nothing, f, xs)
}

/// Run `f` on `xs` keeping, for the backward pass, only `f`'s inputs and the values
/// `policy` keeps; the backward pass recomputes the rest on the device. Gradients reach
/// `xs` and every tensor `f` captures. Without an enclosing reverse-mode transform (or
/// inside another checkpointed function, which already recomputes) this is just `f(xs)`.
pub fn checkpoint_with<F>(policy: CheckpointPolicy, f: F, xs: &[Tensor]) -> Result<Vec<Tensor>>
where
    F: FnOnce(&[Tensor]) -> Result<Vec<Tensor>>,
{
    if !transform::is_recording() || transform::innermost_reverse().is_none() || active().is_some() {
        return f(xs);
    }
    let region = Arc::new(Region::new(policy));
    ACTIVE.with(|a| a.borrow_mut().push(region.clone()));
    let outs = {
        let _pop = Pop;
        f(xs)?
    };
    // the outputs' nodes own the region (the backward pass reaches it through them;
    // under vmap the node is on the physical tensor)
    let index_of = crate::lock(&region.index_of);
    for o in &outs {
        let mut t = Some(o);
        while let Some(view) = t {
            if let Some(n) = view.node().filter(|n| index_of.contains_key(&n.id())) {
                n.own_region(region.clone());
            }
            t = view.batch().map(|(_, physical)| physical);
        }
    }
    drop(index_of);
    Ok(outs)
}

/// The identity, marking `x` as `name` for [`CheckpointPolicy::Names`] (JAX's
/// `checkpoint_name`).
pub fn checkpoint_name(x: &Tensor, name: &str) -> Result<Tensor> {
    bind(Arc::new(Identity { marker: Some(name.to_string()) }), &[x])
}
