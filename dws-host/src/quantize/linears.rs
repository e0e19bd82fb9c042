//! The linear layers of an f32 plan and the observation sites of their inputs.

use super::calibrate::LinearInputs;
use dws_core::observe::{Part, Site, Stage};
use dws_core::plan::{Linear, Map, Mlp, Op, SetLayer};

/// Every linear layer of a block's map, a resampling path or the head, with
/// the site where the f32 pass observes its input rows (`None` where it does
/// not: the first layer of a resampling skip MLP reads `W_0` itself). The
/// input skip and attention-pooling queries are not among them (they keep
/// one scale per tensor).
pub fn each_linear(ops: &[Op], mut f: impl FnMut(&Linear, Option<Site>)) {
    for (i, op) in ops.iter().enumerate() {
        let site = |part| Site {
            op: i as u32,
            part,
            stage: Stage::X,
        };
        match op {
            Op::Block(b) => match &b.map {
                Map::Mlp(m) => mlp(m, site(Part::Block), Stage::X, Stage::Hidden, &mut f),
                Map::Set(s) => set_layer(s, site(Part::Block), &mut f),
            },
            Op::Dws(l) => {
                if let Some(r) = &l.resample {
                    for (k, layer) in r.skip.layers.iter().enumerate() {
                        let s = (k > 0).then(|| site(Part::Skip).at(Stage::Hidden(k as u8 - 1)));
                        f(layer, s);
                    }
                    set_layer(&r.down, site(Part::Down), &mut f);
                    set_layer(&r.up, site(Part::Up), &mut f);
                }
            }
            Op::Head(h) => mlp(&h.mlp, site(Part::Head), Stage::X, Stage::Hidden, &mut f),
            _ => {}
        }
    }
}

/// The sites whose rows linear layers read, and which weights read them.
pub fn linear_inputs(ops: &[Op]) -> LinearInputs {
    let mut inputs = LinearInputs::default();
    each_linear(ops, |l, site| {
        if let Some(s) = site {
            inputs.add(s, l.weight, l.fin);
        }
    });
    inputs
}

fn mlp(
    m: &Mlp,
    site: Site,
    first: Stage,
    hidden: fn(u8) -> Stage,
    f: &mut impl FnMut(&Linear, Option<Site>),
) {
    for (k, l) in m.layers.iter().enumerate() {
        let stage = if k == 0 { first } else { hidden(k as u8 - 1) };
        f(l, Some(site.at(stage)));
    }
}

fn set_layer(s: &SetLayer, site: Site, f: &mut impl FnMut(&Linear, Option<Site>)) {
    match s {
        SetLayer::DeepSets { gamma, lambda, .. } => {
            mlp(gamma, site, Stage::X, Stage::Hidden, f);
            mlp(lambda, site, Stage::Pooled, Stage::LambdaHidden, f);
        }
        SetLayer::Attention {
            fc_q,
            fc_k,
            fc_v,
            fc_o,
            ..
        } => {
            for l in [fc_q, fc_k, fc_v] {
                f(l, Some(site.at(Stage::X)));
            }
            f(fc_o, Some(site.at(Stage::O)));
        }
    }
}
