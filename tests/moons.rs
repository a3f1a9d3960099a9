//! micrograd's demo on `tapegrad::nn` (the very model code of `examples/moons`) prints
//! micrograd's own losses: compared with the trace of micrograd itself (PyPI `micrograd`
//! 0.1.0 under CPython 3.11, its notebook's loop on `data/moons.json`) and with an
//! independent plain-`f64` MLP whose backward pass is written out by hand below.
//!
//! The tolerance is 1e-12 relative, not bit equality: micrograd's backward accumulates each
//! gradient in the order of a depth-first walk over Python `set`s of nodes (ordered by
//! object address), so its last bits are not a fixed function of the maths. Step 0, a
//! forward pass only, agrees to the bit.

#[path = "../examples/moons/model.rs"]
mod model;

use model::Model;
use tapegrad::nn::Params;
use tapegrad::pyrandom::PyRandom;

fn load() -> (Vec<[f64; 2]>, Vec<f64>) {
    let data: serde_json::Value = serde_json::from_str(include_str!("../data/moons.json")).unwrap();
    let xs = data["X"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| [p[0].as_f64().unwrap(), p[1].as_f64().unwrap()])
        .collect();
    let ys = data["y"]
        .as_array()
        .unwrap()
        .iter()
        .map(|y| y.as_f64().unwrap())
        .collect();
    (xs, ys)
}

/// `(loss, accuracy %)` at every step, printed by micrograd's demo loop (see the file's
/// docs); the notebook shows the first and the last.
const MICROGRAD: [(f64, f64); 100] = [
    (0.8958441028683222, 50.0),
    (1.7235905336972022, 81.0),
    (0.7429006313851131, 77.0),
    (0.7705641260584202, 82.0),
    (0.3692793385976538, 84.0),
    (0.3135454819185221, 86.0),
    (0.2814234349772434, 89.0),
    (0.26888733313983904, 91.0),
    (0.2567147286057417, 91.0),
    (0.2704862551637922, 91.0),
    (0.2450702385365804, 91.0),
    (0.2509905529791503, 92.0),
    (0.2156095185192295, 91.0),
    (0.2309037844640272, 93.0),
    (0.20152151227899456, 92.0),
    (0.2257450627928221, 93.0),
    (0.19447987596204117, 92.0),
    (0.21089496199246355, 93.0),
    (0.15983077356303602, 94.0),
    (0.18453748746883916, 93.0),
    (0.1897752285608764, 91.0),
    (0.19072704042579644, 93.0),
    (0.11733695088756486, 97.0),
    (0.12173524408232451, 95.0),
    (0.12615712612770452, 95.0),
    (0.16049097780801674, 95.0),
    (0.18747197705245813, 92.0),
    (0.16741837891059408, 95.0),
    (0.09586583491455394, 97.0),
    (0.08778783707420916, 96.0),
    (0.11731297569011845, 95.0),
    (0.09340146460619839, 97.0),
    (0.12454454903103451, 95.0),
    (0.07984002652777268, 97.0),
    (0.07727519232921672, 97.0),
    (0.07661250143094482, 98.0),
    (0.10610492379198364, 96.0),
    (0.0906280842926598, 99.0),
    (0.1067188704303693, 95.0),
    (0.052256599219758504, 98.0),
    (0.06016009895234461, 100.0),
    (0.08596724533333941, 96.0),
    (0.05112107943179595, 99.0),
    (0.05240142401642828, 97.0),
    (0.04530684179001576, 100.0),
    (0.07211073370655091, 97.0),
    (0.03334238651310231, 99.0),
    (0.03143222795751124, 100.0),
    (0.036585367471115036, 99.0),
    (0.04829139382390314, 99.0),
    (0.09875114765619622, 96.0),
    (0.05449063965875445, 99.0),
    (0.033926794357083144, 100.0),
    (0.052615172635684396, 97.0),
    (0.032502952514249187, 99.0),
    (0.02888327387207826, 100.0),
    (0.04139151104027236, 98.0),
    (0.018987407426128512, 100.0),
    (0.025238335238837388, 100.0),
    (0.02079656521341897, 100.0),
    (0.03259711157810226, 99.0),
    (0.017863351693480325, 100.0),
    (0.023008717832211662, 100.0),
    (0.022079325463581573, 100.0),
    (0.029432917853529604, 99.0),
    (0.016251514644091972, 100.0),
    (0.028468534483264377, 99.0),
    (0.01399436554620871, 100.0),
    (0.01555234484365154, 100.0),
    (0.03389119946160162, 99.0),
    (0.014229870065926895, 100.0),
    (0.013255281583285483, 100.0),
    (0.012300277590022052, 100.0),
    (0.012676052498356035, 100.0),
    (0.020593811955954715, 100.0),
    (0.011845398205364418, 100.0),
    (0.016012697472883218, 100.0),
    (0.025458360239222065, 100.0),
    (0.014382930289661875, 100.0),
    (0.011698962425817958, 100.0),
    (0.012318500800515834, 100.0),
    (0.014121117031464198, 100.0),
    (0.011664591962446189, 100.0),
    (0.011589314549188741, 100.0),
    (0.010990299347735226, 100.0),
    (0.01098922672069161, 100.0),
    (0.010988193757655071, 100.0),
    (0.010987200447388705, 100.0),
    (0.010986246779084925, 100.0),
    (0.010985332742365274, 100.0),
    (0.010984458327280172, 100.0),
    (0.010983623524308862, 100.0),
    (0.010982828324359071, 100.0),
    (0.010982072718767005, 100.0),
    (0.010981356699297042, 100.0),
    (0.010980680258141725, 100.0),
    (0.010980043387921508, 100.0),
    (0.010979446081684675, 100.0),
    (0.010978888332907229, 100.0),
    (0.010978370135492719, 100.0),
];

/// The example's training, step by step: `(loss, accuracy %)`.
fn tapegrad_trace() -> Vec<(f64, f64)> {
    let (xs, ys) = load();
    let mut params = Params::new();
    let model = Model::new(&mut params);
    assert_eq!(params.len(), 337);
    let mut trace = Vec::new();
    model::train(&mut params, &model, (&xs, &ys), |k, loss, accuracy| {
        assert_eq!(k, trace.len());
        trace.push((loss, accuracy * 100.0));
    })
    .unwrap();
    trace
}

fn assert_close(what: &str, k: usize, a: f64, b: f64) {
    let rel = ((a - b) / b).abs();
    assert!(
        rel <= 1e-12,
        "step {k}: {what} {b}, tapegrad {a} (relative {rel:e})"
    );
}

#[test]
fn moons_reproduces_micrograds_notebook() {
    let trace = tapegrad_trace();
    // The two lines the notebook prints, and every line in between.
    assert_eq!(trace[0], (0.8958441028683222, 50.0)); // a forward pass: bit for bit
    assert_close("micrograd", 99, trace[99].0, 0.010978370135492719);
    assert_eq!(trace[99].1, 100.0);
    for (k, (&(loss, accuracy), &(want_loss, want_accuracy))) in
        trace.iter().zip(&MICROGRAD).enumerate()
    {
        assert_close("micrograd", k, loss, want_loss);
        assert_eq!(accuracy, want_accuracy, "step {k}: accuracy");
    }
}

/// micrograd's MLP 2-16-16-1 in plain `f64`, forward and backward written out: layer `l`
/// has weights `w[l][o][i]` and biases `b[l][o]`.
struct Plain {
    w: Vec<Vec<Vec<f64>>>,
    b: Vec<Vec<f64>>,
}

impl Plain {
    /// micrograd's Neuron: `random.uniform(-1, 1)` per weight (CPython: `a + (b - a) *
    /// random()`), neuron by neuron, bias 0.
    fn new() -> Self {
        let mut rng = PyRandom::seed(1337);
        let sizes = [2, 16, 16, 1];
        let mut w = Vec::new();
        for io in sizes.windows(2) {
            w.push(
                (0..io[1])
                    .map(|_| (0..io[0]).map(|_| -1.0 + 2.0 * rng.random()).collect())
                    .collect(),
            );
        }
        let b = sizes[1..].iter().map(|&n| vec![0.0; n]).collect();
        Plain { w, b }
    }

    /// micrograd's parameters() order: neuron by neuron, weights then bias.
    fn parameters(&self) -> Vec<f64> {
        let mut out = Vec::new();
        for (w, b) in self.w.iter().zip(&self.b) {
            for (row, &bias) in w.iter().zip(b) {
                out.extend(row);
                out.push(bias);
            }
        }
        out
    }

    /// The loss, the accuracy in %, and the gradients (shaped as `w` and `b`).
    #[expect(
        clippy::type_complexity,
        reason = "the loss, the accuracy and the two gradient shapes, read once"
    )]
    fn loss_and_grads(
        &self,
        xs: &[[f64; 2]],
        ys: &[f64],
    ) -> (f64, f64, Vec<Vec<Vec<f64>>>, Vec<Vec<f64>>) {
        let mut gw: Vec<Vec<Vec<f64>>> = self
            .w
            .iter()
            .map(|w| w.iter().map(|r| vec![0.0; r.len()]).collect())
            .collect();
        let mut gb: Vec<Vec<f64>> = self.b.iter().map(|b| vec![0.0; b.len()]).collect();
        let n = xs.len() as f64;
        let (mut data_sum, mut right) = (0.0, 0);
        for (x, &y) in xs.iter().zip(ys) {
            // Forward: z = b + sum w x (from the bias, left to right); ReLU but at the end.
            let mut acts = vec![x.to_vec()];
            let mut zs = Vec::new();
            for l in 0..3 {
                let a = &acts[l];
                let z: Vec<f64> = self.w[l]
                    .iter()
                    .zip(&self.b[l])
                    .map(|(row, &b)| row.iter().zip(a).fold(b, |s, (w, x)| s + w * x))
                    .collect();
                let next = if l < 2 {
                    z.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect()
                } else {
                    z.clone()
                };
                zs.push(z);
                acts.push(next);
            }
            let score = acts[3][0];
            let margin = score * -y + 1.0;
            data_sum += if margin > 0.0 { margin } else { 0.0 };
            right += usize::from((score > 0.0) == (y > 0.0));
            // Backward: d loss / d score = -y / n where the margin is active.
            let mut dz = vec![if margin > 0.0 { -y * (1.0 / n) } else { 0.0 }];
            for l in (0..3).rev() {
                let a = &acts[l];
                let mut da = vec![0.0; a.len()];
                for (o, &d) in dz.iter().enumerate() {
                    gb[l][o] += d;
                    for i in 0..a.len() {
                        gw[l][o][i] += d * a[i];
                        da[i] += d * self.w[l][o][i];
                    }
                }
                if l > 0 {
                    dz = da
                        .iter()
                        .zip(&zs[l - 1])
                        .map(|(&d, &z)| if z > 0.0 { d } else { 0.0 })
                        .collect();
                }
            }
        }
        let params = self.parameters();
        let reg = params.iter().fold(0.0, |s, p| s + p * p) * 1e-4;
        // d (1e-4 sum p^2) / dp = 2e-4 p.
        let weights = self.w.iter().flatten().flatten();
        for (g, w) in gw.iter_mut().flatten().flatten().zip(weights) {
            *g += 2e-4 * w;
        }
        for (g, b) in gb.iter_mut().flatten().zip(self.b.iter().flatten()) {
            *g += 2e-4 * b;
        }
        let accuracy = right as f64 / ys.len() as f64 * 100.0;
        (data_sum * (1.0 / n) + reg, accuracy, gw, gb)
    }
}

#[test]
fn moons_matches_a_hand_written_plain_f64_loop() {
    let (xs, ys) = load();
    let trace = tapegrad_trace();
    let mut net = Plain::new();
    for (k, &(loss, accuracy)) in trace.iter().enumerate() {
        let (want, want_accuracy, gw, gb) = net.loss_and_grads(&xs, &ys);
        assert_close("plain f64", k, loss, want);
        assert_eq!(accuracy, want_accuracy, "step {k}: accuracy");
        let lr = 1.0 - 0.9 * k as f64 / 100.0;
        for (w, g) in net
            .w
            .iter_mut()
            .flatten()
            .flatten()
            .zip(gw.iter().flatten().flatten())
        {
            *w -= lr * g;
        }
        for (b, g) in net.b.iter_mut().flatten().zip(gb.iter().flatten()) {
            *b -= lr * g;
        }
    }
}
