//! Calibration: the f32 model over the calibration inputs, recording the
//! magnitudes of every value the quantized path stores (per observation site
//! of the core, [`dws_core::observe`]) and, for the weight rounding, the
//! second moments `E[x x^T]` of the rows every linear layer reads.

use anyhow::{anyhow, Result};
use dws_core::observe::{Observe, Site};
use dws_core::plan::{Op, ParamRef};
use dws_core::Model;
use std::collections::BTreeMap;

/// Magnitudes seen at every observation point, as a histogram over `log2 |x|`
/// (8 bins per octave), and the largest one.
#[derive(Debug, Default, Clone)]
pub struct Ranges(BTreeMap<Site, Histogram>);

/// A log-magnitude histogram.
#[derive(Debug, Clone)]
pub struct Histogram {
    max: f32,
    count: u64,
    bins: Vec<u64>,
}

const BINS_PER_OCTAVE: f32 = 8.0;
const LOWEST_OCTAVE: f32 = -40.0;
const N_BINS: usize = 640;

impl Histogram {
    fn new() -> Self {
        Histogram {
            max: 0.0,
            count: 0,
            bins: vec![0; N_BINS],
        }
    }

    fn bin(v: f32) -> usize {
        let b = ((v.max(1e-30).log2() - LOWEST_OCTAVE) * BINS_PER_OCTAVE).floor();
        b.clamp(0.0, (N_BINS - 1) as f32) as usize
    }

    fn add(&mut self, values: &[f32]) {
        for v in values {
            let a = v.abs();
            self.max = self.max.max(a);
            self.count += 1;
            self.bins[Histogram::bin(a)] += 1;
        }
    }

    fn merge(&mut self, o: &Histogram) {
        self.max = self.max.max(o.max);
        self.count += o.count;
        self.bins.iter_mut().zip(&o.bins).for_each(|(a, b)| *a += b);
    }

    /// The magnitude below which `coverage` of the values lie (at most the max).
    fn clip(&self, coverage: f64) -> f32 {
        let target = (self.count as f64 * coverage).ceil() as u64;
        let mut seen = 0;
        for (i, n) in self.bins.iter().enumerate() {
            seen += n;
            if seen >= target {
                let upper = 2f32.powf((i as f32 + 1.0) / BINS_PER_OCTAVE + LOWEST_OCTAVE);
                return upper.min(self.max);
            }
        }
        self.max
    }
}

impl Ranges {
    fn histogram(&self, site: Site) -> Result<&Histogram> {
        self.0
            .get(&site)
            .ok_or_else(|| anyhow!("no calibration data at {site:?}"))
    }

    /// The largest magnitude seen at `site` (0 if only zeros were).
    pub fn max(&self, site: Site) -> Result<f32> {
        Ok(self.histogram(site)?.max)
    }

    /// The magnitude that `coverage` of the values seen at `site` do not exceed.
    pub fn clip(&self, site: Site, coverage: f64) -> Result<f32> {
        Ok(self.histogram(site)?.clip(coverage))
    }

    fn merge(&mut self, o: &Ranges) {
        for (site, h) in &o.0 {
            match self.0.get_mut(site) {
                Some(mine) => mine.merge(h),
                None => {
                    self.0.insert(*site, h.clone());
                }
            }
        }
    }
}

/// The row width of every observation site whose values are the input rows
/// of linear layers, and the sites each weight tensor reads (a tensor that
/// upstream shares between modules reads several).
#[derive(Debug, Default, Clone)]
pub struct LinearInputs {
    /// Row width by site.
    pub widths: BTreeMap<Site, usize>,
    /// Sites by weight tensor (the f32 reference's offset and length).
    pub feeds: BTreeMap<(u32, u32), Vec<Site>>,
}

impl LinearInputs {
    /// Records that the linear layer with weights `w` and input width `fin`
    /// reads the rows seen at `site`.
    pub fn add(&mut self, site: Site, w: ParamRef, fin: u32) {
        self.widths.insert(site, fin as usize);
        let sites = self.feeds.entry((w.offset, w.len)).or_default();
        if !sites.contains(&site) {
            sites.push(site);
        }
    }
}

/// Sums of `x x^T` over the rows seen at one site.
#[derive(Debug, Clone)]
pub struct Moment {
    /// Row width.
    pub fin: usize,
    /// Rows summed.
    pub rows: u64,
    /// `fin x fin`, row-major (both triangles).
    pub sum: Vec<f64>,
}

impl Moment {
    fn new(fin: usize) -> Self {
        Moment {
            fin,
            rows: 0,
            sum: vec![0.0; fin * fin],
        }
    }

    fn add(&mut self, values: &[f32]) {
        let f = self.fin;
        if f == 0 {
            return;
        }
        for x in values.chunks_exact(f) {
            self.rows += 1;
            for (i, &xi) in x.iter().enumerate() {
                if xi == 0.0 {
                    continue;
                }
                let xi = xi as f64;
                let row = &mut self.sum[i * f..(i + 1) * f];
                for (g, &xj) in row.iter_mut().zip(x) {
                    *g += xi * xj as f64;
                }
            }
        }
    }

    fn merge(&mut self, o: &Moment) {
        self.rows += o.rows;
        self.sum.iter_mut().zip(&o.sum).for_each(|(a, b)| *a += b);
    }
}

/// The second moments of linear-layer inputs, by site.
#[derive(Debug, Default, Clone)]
pub struct Moments(pub BTreeMap<Site, Moment>);

impl Moments {
    /// `E[x x^T]` over every row the weight tensor `w` reads (its sites
    /// together), if any was seen.
    pub fn of(&self, inputs: &LinearInputs, w: ParamRef) -> Option<Vec<f64>> {
        let sites = inputs.feeds.get(&(w.offset, w.len))?;
        let mut total: Option<Moment> = None;
        for m in sites.iter().filter_map(|s| self.0.get(s)) {
            match &mut total {
                Some(t) if t.fin == m.fin => t.merge(m),
                Some(_) => return None,
                None => total = Some(m.clone()),
            }
        }
        let t = total.filter(|t| t.rows > 0)?;
        let n = t.rows as f64;
        Some(t.sum.iter().map(|v| v / n).collect())
    }
}

/// The calibration result.
#[derive(Debug, Default, Clone)]
pub struct Calibration {
    /// Ranges per observation point.
    pub ranges: Ranges,
    /// Per input tensor: the largest magnitude after normalization.
    pub input_max: Vec<f32>,
    /// Second moments of the linear layers' inputs (empty unless asked for).
    pub moments: Moments,
}

impl Calibration {
    fn merge(&mut self, o: Calibration) {
        self.ranges.merge(&o.ranges);
        if self.input_max.is_empty() {
            self.input_max = o.input_max;
        } else {
            for (a, b) in self.input_max.iter_mut().zip(&o.input_max) {
                *a = a.max(*b);
            }
        }
        for (site, m) in o.moments.0 {
            match self.moments.0.get_mut(&site) {
                Some(mine) => mine.merge(&m),
                None => {
                    self.moments.0.insert(site, m);
                }
            }
        }
    }
}

/// The observer of one part of the calibration.
struct Recorder<'w> {
    cal: Calibration,
    widths: Option<&'w BTreeMap<Site, usize>>,
}

impl Observe for Recorder<'_> {
    fn observe(&mut self, site: Site, values: &[f32]) {
        self.cal
            .ranges
            .0
            .entry(site)
            .or_insert_with(Histogram::new)
            .add(values);
        if let Some(&fin) = self.widths.and_then(|w| w.get(&site)) {
            self.cal
                .moments
                .0
                .entry(site)
                .or_insert_with(|| Moment::new(fin))
                .add(values);
        }
    }
}

/// Inputs per part of the calibration: the parts run on any number of
/// threads and are merged in order, so the result does not depend on how
/// many there are.
const PART: usize = 16;

/// Runs the f32 model over `inputs` (`[n, input_len]`) recording ranges and,
/// with `inputs_of`, the second moments of the linear layers' inputs; on up
/// to `threads` threads, the same result for any count. Calls `done` after
/// each input.
pub fn calibrate(
    model: &Model<'_>,
    inputs: &[f32],
    inputs_of: Option<&LinearInputs>,
    threads: usize,
    done: &(dyn Fn() + Sync),
) -> Result<Calibration> {
    let n = model.input_len();
    let parts: Vec<&[f32]> = inputs.chunks(n * PART).collect();
    let norm = normalization(model)?;
    let widths = inputs_of.map(|l| &l.widths);
    let run_part = |part: &[f32]| -> Result<Calibration> {
        let mut rec = Recorder {
            cal: Calibration::default(),
            widths,
        };
        let mut scratch = vec![0f32; model.scratch_len()];
        let mut out = vec![0f32; model.output_len()];
        let shape = model.shape();
        let f = model.spec().input_features as usize;
        rec.cal.input_max = vec![0f32; shape.tensors()];
        for x in part.chunks(n) {
            model
                .run_observed(x, &mut scratch, &mut out, &mut rec)
                .map_err(|e| anyhow!("{e}"))?;
            for (t, m) in rec.cal.input_max.iter_mut().enumerate() {
                let at = shape.offset(t, f);
                for i in at..at + shape.cells(t) * f {
                    let v = match &norm {
                        Some((mean, std)) => (x[i] - mean[i]) / std[i],
                        None => x[i],
                    };
                    *m = m.max(v.abs());
                }
            }
            done();
        }
        Ok(rec.cal)
    };
    let threads = threads.clamp(1, parts.len().max(1));
    let mut results: Vec<Option<Result<Calibration>>> = (0..parts.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        for (k, slots) in results
            .chunks_mut(parts.len().div_ceil(threads).max(1))
            .enumerate()
        {
            let first = k * parts.len().div_ceil(threads).max(1);
            let (parts, run_part) = (&parts, &run_part);
            s.spawn(move || {
                for (i, slot) in slots.iter_mut().enumerate() {
                    *slot = Some(run_part(parts[first + i]));
                }
            });
        }
    });
    let mut cal = Calibration::default();
    for r in results.into_iter().flatten() {
        cal.merge(r?);
    }
    Ok(cal)
}

/// The model's input statistics (`mean`, `std` per element), if it has them.
pub fn normalization(model: &Model<'_>) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
    let p = model.params();
    for op in model.ops() {
        if let Op::Normalize { mean, std } = op.map_err(|e| anyhow!("{e}"))? {
            let get = |r: ParamRef| p[r.offset as usize..(r.offset + r.len) as usize].to_vec();
            return Ok(Some((get(mean), get(std))));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_sum_outer_products_and_merge() {
        let mut m = Moment::new(2);
        m.add(&[1.0, 2.0, 3.0, 0.0]);
        assert_eq!(m.rows, 2);
        assert_eq!(m.sum, [10.0, 2.0, 2.0, 4.0]);
        let mut t = m.clone();
        t.merge(&m);
        assert_eq!((t.rows, t.sum[0]), (4, 20.0));
    }

    #[test]
    fn histograms_merge_exactly() {
        let (mut a, mut b) = (Histogram::new(), Histogram::new());
        a.add(&[1.0, -3.0]);
        b.add(&[0.5]);
        a.merge(&b);
        assert_eq!((a.count, a.max), (3, 3.0));
        assert_eq!(a.clip(1.0), 3.0);
    }
}
