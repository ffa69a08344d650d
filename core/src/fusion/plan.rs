//! Materialization: the DAG under a pending value as one plan (steps in topological
//! order, leaves, which values must be written) and its launch, split where one kernel
//! could not bind it.
use super::hosts::{host_of, run_product, run_prologue_host};
use super::*;

/// One DAG ready to launch: the steps in topological order (root last).
pub(super) struct Plan {
    pub(super) steps: Vec<FusedStep>,
    pub(super) scalars: Vec<f32>,
    pub(super) leaves: Vec<Tensor>,
    pub(super) leaf_step: HashMap<LeafId, u32>,
    /// Pending nodes in the DAG with their step and how many DAG edges point at them.
    pub(super) nodes: Vec<(Arc<Lazy>, u32, usize)>,
    pub(super) node_index: HashMap<usize, usize>,
    /// The pending matmul whose store runs this DAG (its index in `nodes`).
    pub(super) acc: Option<usize>,
    /// A second pending matmul in the DAG: computed on its own first.
    pub(super) must_force: Option<Arc<Lazy>>,
}

impl Plan {
    pub(super) fn new() -> Plan {
        Plan {
            steps: Vec::new(),
            scalars: Vec::new(),
            leaves: Vec::new(),
            leaf_step: HashMap::new(),
            nodes: Vec::new(),
            node_index: HashMap::new(),
            acc: None,
            must_force: None,
        }
    }

    pub(super) fn visit(&mut self, n: &Arc<Lazy>, device: &Device) -> Result<u32> {
        if let Some(&i) = self.node_index.get(&n.address()) {
            self.nodes[i].2 += 1;
            return Ok(self.nodes[i].1);
        }
        if let Some(buf) = n.result.get() {
            return Ok(self.load(leaf_of(buf.clone(), &n.shape, device)));
        }
        let (op, args) = {
            let p = crate::lock(&n.pending);
            let p = p.as_ref().ok_or_else(|| crate::Error::Internal {
                op: "fusion",
                msg: "a fused value was released before it was computed".into(),
            })?;
            (p.op.clone(), p.args.clone())
        };
        if let Fusible::Host(host) = &op {
            // a prologue host (a reduction read by an elementwise op of its own shape) or a
            // second product: computed first; the first product hosts the DAG
            if host.kind() == HostKind::Prologue || self.acc.is_some() {
                self.must_force = Some(n.clone());
                return Ok(0);
            }
            self.acc = Some(self.nodes.len());
            return Ok(self.add_node(n, FusedStep::Acc));
        }
        let mut operands = Vec::with_capacity(args.len());
        for a in &args {
            operands.push(match a {
                Arg::Node(c) => self.visit(c, device)?,
                Arg::Leaf(t) => self.load(t.clone()),
            });
        }
        let step = match op {
            Fusible::Unary(op, s) => {
                self.scalars.push(s as f32);
                FusedStep::Unary { op, x: operands[0], scalar: self.scalars.len() as u32 - 1 }
            }
            Fusible::User(id, s) => {
                self.scalars.push(s as f32);
                FusedStep::User { id, x: operands[0], scalar: self.scalars.len() as u32 - 1 }
            }
            Fusible::Binary(op) => FusedStep::Binary { op, a: operands[0], b: operands[1] },
            Fusible::Where => FusedStep::Where { c: operands[0], a: operands[1], b: operands[2] },
            Fusible::Host(_) => unreachable!("handled above"),
        };
        Ok(self.add_node(n, step))
    }

    /// The step computing pending node `n`, reached by its first DAG edge.
    fn add_node(&mut self, n: &Arc<Lazy>, step: FusedStep) -> u32 {
        self.steps.push(step);
        let id = self.steps.len() as u32 - 1;
        self.node_index.insert(n.address(), self.nodes.len());
        self.nodes.push((n.clone(), id, 1));
        id
    }

    /// Distinct buffers the leaves read.
    pub(super) fn buffers(&self) -> usize {
        let mut b: Vec<usize> = self.leaves.iter().map(|t| leaf_id(t).0).collect();
        b.sort();
        b.dedup();
        b.len()
    }

    /// The program a host kernel runs: the steps over `views` of the leaves, writing the
    /// steps of `outputs`, over `shape`.
    pub(super) fn program<'a>(
        &self,
        views: &[View<'a>],
        outputs: Vec<u32>,
        shape: &[usize],
    ) -> wgrad_kernels::Epilogue<'a> {
        wgrad_kernels::Epilogue {
            steps: self.steps.clone(),
            inputs: views.to_vec(),
            scalars: self.scalars.clone(),
            outputs,
            shape: shape.to_vec(),
        }
    }

    /// The DAG is computed: `bufs` are the values of the nodes at `outputs`; every node's
    /// arguments are released (leaves go back to the pool).
    pub(super) fn resolve(&self, outputs: &[usize], bufs: Vec<GpuBuffer>) {
        for (&i, buf) in outputs.iter().zip(bufs) {
            let _ = self.nodes[i].0.result.set(Arc::new(buf));
        }
        for (n, _, _) in &self.nodes {
            crate::lock(&n.pending).take();
        }
    }

    fn load(&mut self, t: Tensor) -> u32 {
        let id = leaf_id(&t);
        if let Some(&s) = self.leaf_step.get(&id) {
            return s;
        }
        self.steps.push(FusedStep::Load(self.leaves.len() as u32));
        self.leaves.push(t);
        let s = self.steps.len() as u32 - 1;
        self.leaf_step.insert(id, s);
        s
    }

    /// Nodes whose values must be written: the root, and every interior node that a tensor
    /// holds (a user's, a tape's) or that a pending node outside this DAG reads.
    pub(super) fn outputs(&self) -> Vec<usize> {
        let root = self.nodes.len() - 1;
        (0..self.nodes.len())
            .filter(|&i| {
                let (n, _, edges) = &self.nodes[i];
                i == root || n.holders() > 0 || n.dependents() > *edges
            })
            .collect()
    }
}

pub(super) fn force_locked(root: &Arc<Lazy>) -> Result<Arc<GpuBuffer>> {
    loop {
        if let Some(b) = root.result.get() {
            return Ok(b.clone());
        }
        if let Some((host, operands, arg)) = host_of(root) {
            return match (operands, arg) {
                (Some(op), _) => run_product(root, host.as_ref(), &op),
                (None, Some(arg)) => run_prologue_host(root, host.as_ref(), arg),
                (None, None) => Err(crate::Error::Internal {
                    op: "fusion",
                    msg: format!("a pending {} has neither operands nor an argument", host.name()),
                }),
            };
        }
        let device = Device::Gpu(root.ctx.clone());
        let mut plan = Plan::new();
        plan.visit(root, &device)?;
        if let Some(m) = plan.must_force.take() {
            drop(plan);
            force_locked(&m)?;
            continue;
        }
        let outputs = plan.outputs();
        // the product runs the DAG in its store only if nothing else reads its own result
        let acc = plan.acc.map(|i| plan.nodes[i].0.clone());
        if let (Some(i), Some(m)) = (plan.acc, &acc) {
            if outputs.contains(&i) {
                drop(plan);
                force_locked(m)?;
                continue;
            }
        }
        let buffers = plan.buffers() + if acc.is_some() { 2 } else { 0 };
        let (rank, inputs, scalars) = (root.shape.len(), plan.leaves.len(), plan.scalars.len());
        let words = match acc {
            Some(_) => wgrad_kernels::epilogue_param_words(rank, inputs, scalars),
            None => fused_param_words(rank, inputs, scalars),
        };
        if (buffers + outputs.len()) as u32 > FUSED_MAX_BUFFERS || words > FUSED_PARAM_WORDS {
            // split: the matmul runs alone first, else an interior value that must be
            // written anyway goes first, else the root's largest pending argument
            let interior = outputs.iter().find(|&&i| i + 1 != plan.nodes.len()).map(|&i| plan.nodes[i].0.clone());
            let next = acc.clone().or(interior).or_else(|| largest_pending_arg(root));
            drop(plan);
            match next {
                Some(n) => {
                    force_locked(&n)?;
                    continue;
                }
                None => {
                    return Err(crate::Error::Invalid {
                        op: "fusion",
                        msg: format!("a fused op reads {buffers} buffers, more than one kernel can bind"),
                    })
                }
            }
        }
        let views: Vec<View> = plan.leaves.iter().map(|t| t.view()).collect();
        let out_steps: Vec<u32> = outputs.iter().map(|&i| plan.nodes[i].1).collect();
        let bufs = match &acc {
            None => root.ctx.fused(&plan.steps, &views, &plan.scalars, &out_steps, &root.shape)?,
            Some(m) => {
                let Some((host, Some(op), _)) = host_of(m) else {
                    return Err(crate::Error::Internal {
                        op: "fusion",
                        msg: "an epilogue host without operands".into(),
                    });
                };
                let epi = plan.program(&views, out_steps.clone(), &root.shape);
                match host.launch_product(&root.ctx, &op, Some(&epi))? {
                    Some(bufs) => bufs,
                    None => {
                        // this product cannot take an epilogue (split-K): alone, then the DAG
                        drop(epi);
                        drop(views);
                        drop(plan);
                        run_product(m, host.as_ref(), &op)?;
                        continue;
                    }
                }
            }
        };
        drop(views);
        plan.resolve(&outputs, bufs);
    }
}

/// The pending argument of `n` with the largest DAG.
fn largest_pending_arg(n: &Arc<Lazy>) -> Option<Arc<Lazy>> {
    let p = crate::lock(&n.pending);
    let p = p.as_ref()?;
    p.args
        .iter()
        .filter_map(|a| match a {
            Arg::Node(c) if c.is_pending() => Some(Arc::clone(c)),
            _ => None,
        })
        .max_by_key(|c| crate::lock(&c.pending).as_ref().map_or(0, |p| p.cost.nodes.len()))
}
