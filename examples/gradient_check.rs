//! The loss-gradient chapter of "Understanding Gradients", computed on the tape.
//!
//! The chapter derives by hand that the gradient of softmax cross-entropy with respect to
//! the logits is `P - onehot(target)`, and prints tables of it from a 4 x 6 probability
//! table. Here the loss is recorded as the chapter writes it, `-ln(e^l_t / sum_j e^l_j)`,
//! from exp, sum, division and log nodes, on logits `ln P`; one backward pass produces every
//! gradient, and every table the chapter prints is printed from the tape, beside the closed
//! form. Finally the graph of position 0's loss is written as Graphviz DOT.
//!
//! Run: `cargo run --release --example gradient_check [-- path/for/position0_loss.dot]`

use std::error::Error;

use tapegrad::check::{Tolerance, gradcheck};
use tapegrad::dot::Dot;
use tapegrad::{Graph, Var, functional};

/// The vocabulary of the series.
const TOKEN_NAMES: [&str; 6] = ["<PAD>", "<BOS>", "<EOS>", "I", "like", "transformers"];

/// The chapter's probabilities, as it prints them (already rounded to 4 places; row 2
/// sums to 0.9999, not 1).
const PROBS: [[f64; 6]; 4] = [
    [0.1785, 0.2007, 0.1759, 0.1254, 0.1563, 0.1632], // position 0: <BOS>
    [0.1836, 0.1969, 0.1805, 0.1233, 0.1500, 0.1657], // position 1: I
    [0.1795, 0.2050, 0.1782, 0.1207, 0.1437, 0.1728], // position 2: like
    [0.1855, 0.2017, 0.1771, 0.1271, 0.1391, 0.1695], // position 3: transformers
];

/// What each position should predict: I, like, transformers, <EOS>.
const TARGETS: [usize; 4] = [3, 4, 5, 2];

/// The input at each position: <BOS>, I, like, transformers, <EOS>.
const TOKENS: [usize; 5] = [1, 3, 4, 5, 2];

/// The chapter's made-up logits for position 0, for one gradient-descent step.
const LOGITS_BEFORE: [f64; 6] = [-0.5, 0.2, -0.3, -0.8, -0.2, 0.1];
const LEARNING_RATE: f64 = 0.1;

/// The confidences of the chapter's last table.
const TEST_PROBS: [f64; 7] = [0.01, 0.10, 0.25, 0.50, 0.75, 0.90, 0.99];

/// The tape gradient must match the closed form this closely.
const CLOSED_FORM_LIMIT: f64 = 1e-12;

/// `x` in Python's `{:.Ne}` style (`-1.00e-04`, two-digit exponent), as the chapter prints.
fn sci(x: f64, digits: usize) -> String {
    let s = format!("{x:.digits$e}");
    let (mantissa, exponent) = s.split_once('e').expect("`{:e}` always has an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` writes an integer exponent");
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}

/// `sum(xs)` as the chapter's Python computes it: CPython 3.12+ adds floats with
/// Neumaier's compensated summation, which is what makes the chapter print row 0's sum as
/// `-0.0000000000` and row 1's as `0.0000000000`.
fn python_sum(xs: &[f64]) -> f64 {
    let (mut sum, mut compensation) = (0.0_f64, 0.0_f64);
    for &x in xs {
        let t = sum + x;
        compensation += if sum.abs() >= x.abs() {
            (sum - t) + x
        } else {
            (x - t) + sum
        };
        sum = t;
    }
    sum + compensation
}

/// One position's loss on the tape, keeping the nodes the tables read.
struct Position<'g> {
    logits: Vec<Var<'g>>,
    /// The tape's softmax: `e^l_j / sum`, one division node per entry.
    probs: Vec<Var<'g>>,
    loss: Var<'g>,
}

/// Where to write the DOT file: the one optional argument, else the temporary directory.
fn dot_path() -> Result<std::path::PathBuf, lexopt::Error> {
    use lexopt::prelude::*;
    let mut path = std::env::temp_dir().join("position0_loss.dot");
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Value(p) => path = p.into(),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(path)
}

fn main() -> Result<(), Box<dyn Error>> {
    let g = Graph::new();

    // logits = ln P, so softmax(logits) = P / sum(P): the table itself where it sums to 1.
    let positions: Vec<Position> = PROBS
        .iter()
        .zip(TARGETS)
        .map(|(row, target)| {
            let logits = g.vars(&row.map(f64::ln));
            // P(j) = exp(l_j) / sum_k exp(l_k): exp nodes, one n-ary sum, divisions.
            let probs = functional::softmax_composed(&logits);
            // L = -ln P(target): a log node and a negation.
            let loss = -probs[target].ln();
            Position {
                logits,
                probs,
                loss,
            }
        })
        .collect();
    let total_loss = g.sum(positions.iter().map(|p| p.loss));
    let grads = total_loss.backward();

    // What the tape computed, read back as plain numbers.
    let p: Vec<Vec<f64>> = positions
        .iter()
        .map(|pos| pos.probs.iter().map(Var::value).collect())
        .collect();
    let tape_grad: Vec<Vec<f64>> = positions
        .iter()
        .map(|pos| grads.wrt_all(&pos.logits))
        .collect();
    // The chapter's closed form, from the tape's forward values only.
    let closed_form: Vec<Vec<f64>> = p
        .iter()
        .zip(TARGETS)
        .map(|(row, t)| {
            let mut row = row.clone();
            row[t] -= 1.0;
            row
        })
        .collect();

    println!("tapegrad: the loss-gradient chapter, computed on the tape");
    println!(
        "Recorded logits = ln P, then L = -ln(exp(l_t) / sum_j exp(l_j)) per position from \
         exp, sum, division and log nodes ({} nodes); one backward pass gives every gradient.",
        g.len()
    );
    println!();

    println!("Forward pass predictions:");
    println!("{}", "=".repeat(60));
    println!();
    for (i, &t) in TARGETS.iter().enumerate() {
        println!(
            "Position {i}: {:12} → should predict {:12} (P = {:.4})",
            TOKEN_NAMES[TOKENS[i]], TOKEN_NAMES[t], p[i][t]
        );
    }
    println!(
        "Total loss (sum over positions) = {:.4}",
        total_loss.value()
    );
    println!();

    // ---- The 4 x 6 gradient table, from the tape ----
    println!("Loss Gradients w.r.t. Logits (dL/dlogit)");
    println!("{}", "=".repeat(75));
    println!();
    println!(
        "{:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "Position", "<PAD>", "<BOS>", "<EOS>", "I", "like", "trans"
    );
    println!("{}", "-".repeat(75));
    for (i, row) in tape_grad.iter().enumerate() {
        let mut line = format!("{:<12}", TOKEN_NAMES[TOKENS[i]]);
        for (j, gr) in row.iter().enumerate() {
            let marker = if j == TARGETS[i] { '*' } else { ' ' };
            line += &format!(" {gr:>8.4}{marker}");
        }
        println!("{line}");
    }
    println!();
    println!("* marks the target token (negative gradient)");
    println!();

    // ---- Beside it, the closed form ----
    println!("The tape's gradient beside the closed form P - onehot (P = the tape's softmax)");
    println!("{}", "=".repeat(75));
    println!();
    println!(
        "{:<12} {:<12} {:>19} {:>19} {:>10}",
        "Position", "Token", "tape dL/dlogit", "P - onehot", "|diff|"
    );
    println!("{}", "-".repeat(75));
    let mut max_diff = 0.0_f64;
    for (i, (tape_row, closed_row)) in tape_grad.iter().zip(&closed_form).enumerate() {
        for (j, (&tape, &closed)) in tape_row.iter().zip(closed_row).enumerate() {
            let diff = (tape - closed).abs();
            max_diff = max_diff.max(diff);
            let marker = if j == TARGETS[i] { '*' } else { ' ' };
            println!(
                "{:<12} {:<12} {tape:>19.15} {closed:>19.15} {:>10}{marker}",
                if j == 0 { TOKEN_NAMES[TOKENS[i]] } else { "" },
                TOKEN_NAMES[j],
                sci(diff, 1)
            );
        }
    }
    println!();
    let ok = max_diff < CLOSED_FORM_LIMIT;
    println!(
        "Largest |tape - (P - onehot)| over all 24 entries: {}  {}",
        sci(max_diff, 2),
        if ok {
            "✓ (< 1e-12)"
        } else {
            "✗ (not < 1e-12)"
        }
    );
    let chapter_diff = tape_grad
        .iter()
        .zip(PROBS)
        .zip(TARGETS)
        .flat_map(|((tape_row, row), t)| {
            tape_row.iter().enumerate().map(move |(j, &tape)| {
                let chapter = row[j] - f64::from(u8::from(j == t));
                (tape - chapter).abs()
            })
        })
        .fold(0.0_f64, f64::max);
    println!(
        "Largest |tape - chapter's printed gradient|: {} (row 2 is renormalised, see below)",
        sci(chapter_diff, 2)
    );
    println!();

    // ---- Position 0 step by step ----
    println!("Detailed: Position 0 (<BOS> → should predict I)");
    println!("{}", "=".repeat(70));
    println!();
    println!("Step 1: Current probabilities from softmax");
    println!("{}", "-".repeat(50));
    for (j, name) in TOKEN_NAMES.iter().enumerate() {
        let marker = if j == TARGETS[0] { "← TARGET" } else { "" };
        println!("  P({name:12}) = {:.4}  {marker}", p[0][j]);
    }
    println!("  Sum = {:.4}", p[0].iter().sum::<f64>());
    println!();
    println!("Step 2: Compute gradients using formula: dL/dlogit = P(i) - 1[i==target]");
    println!("{}", "-".repeat(70));
    for (j, name) in TOKEN_NAMES.iter().enumerate() {
        let is_target = u8::from(j == TARGETS[0]);
        println!(
            "  dL/dlogit[{name:12}] = {:.4} - {is_target} = {:>8.4}",
            p[0][j], tape_grad[0][j]
        );
    }
    println!("  (the right-hand side is read from the tape's backward pass, not from the formula)");
    println!();

    // ---- One gradient-descent step ----
    println!("Effect of one gradient descent step (learning rate = 0.1)");
    println!("{}", "=".repeat(70));
    println!();
    println!(
        "{:<12} {:>12} {:>10} {:>12} {:>10}",
        "Token", "Logit Before", "Gradient", "Logit After", "Change"
    );
    println!("{}", "-".repeat(70));
    for (j, name) in TOKEN_NAMES.iter().enumerate() {
        // As in the chapter: position 0's gradient applied to made-up logits.
        let grad = tape_grad[0][j];
        let before = LOGITS_BEFORE[j];
        let after = before - LEARNING_RATE * grad;
        let marker = if j == TARGETS[0] { "← TARGET" } else { "" };
        println!(
            "{name:<12} {before:>12.4} {grad:>10.4} {after:>12.4} {:>+10.4}  {marker}",
            after - before
        );
    }
    println!();
    println!("The target token's logit increased; all others decreased.");
    println!();

    // ---- Rows sum to zero ----
    println!("Verification: Gradients sum to zero at each position");
    println!("{}", "=".repeat(50));
    println!();
    println!("The chapter's own check, summing its rounded table's P - onehot:");
    for (i, (row, t)) in PROBS.iter().zip(TARGETS).enumerate() {
        let mut grad = *row;
        grad[t] -= 1.0;
        let grad_sum = python_sum(&grad);
        let status = if grad_sum.abs() < 1e-6 {
            "✓".to_string()
        } else {
            format!("✗ (off by {})", sci(grad_sum, 2))
        };
        println!(
            "Position {i} ({:12}): sum = {grad_sum:>12.10}  {status}",
            TOKEN_NAMES[TOKENS[i]]
        );
    }
    println!();
    println!("The tape's gradients:");
    for (i, row) in tape_grad.iter().enumerate() {
        let grad_sum: f64 = row.iter().sum();
        let status = if grad_sum.abs() < 1e-12 { "✓" } else { "✗" };
        println!(
            "Position {i} ({:12}): sum = {grad_sum:>12.10}  {status} (= {})",
            TOKEN_NAMES[TOKENS[i]],
            sci(grad_sum, 2)
        );
    }
    println!();
    let row2_sum: f64 = PROBS[2].iter().sum();
    println!(
        "Why row 2 is \"off by -1.00e-04\" in the chapter: its inputs are rounded to 4 places \
         and row 2 sums to {row2_sum:.4}, not 1, so P - onehot sums to {:.4} - 1. A model \
         never produces such a row: its probabilities come from a softmax. The logits ln P \
         have the softmax P / {row2_sum:.4} (the tape's P(transformers) at position 2 is \
         {:.10}, not 0.1728), which sums to 1, so the true gradient of every row sums to 0 \
         to machine precision, as the tape shows.",
        row2_sum, p[2][5]
    );
    println!();

    // ---- Confidence table ----
    println!("How gradient magnitude depends on model confidence");
    println!("{}", "=".repeat(55));
    println!();
    println!(
        "{:>12} {:>18} {:<25}",
        "P(target)", "Target Gradient", "Interpretation"
    );
    println!("{}", "-".repeat(55));
    let mark = g.mark();
    let mut confidence_diff = 0.0_f64;
    for &prob in &TEST_PROBS {
        // Six logits whose softmax gives the target probability `prob` and shares the
        // rest equally; the target's gradient is then read from the tape.
        let rest = (1.0 - prob) / 5.0;
        let logits = g.vars(&[
            prob.ln(),
            rest.ln(),
            rest.ln(),
            rest.ln(),
            rest.ln(),
            rest.ln(),
        ]);
        let loss = functional::cross_entropy_composed(&logits, 0);
        let grad = loss.backward()[logits[0]];
        confidence_diff = confidence_diff.max((grad - (prob - 1.0)).abs());
        g.release(mark);
        let interp = if prob < 0.2 {
            "Very wrong, strong signal"
        } else if prob < 0.5 {
            "Uncertain, moderate signal"
        } else if prob < 0.8 {
            "Getting it, weaker signal"
        } else {
            "Confident, tiny signal"
        };
        println!("{prob:>12.2} {grad:>18.4} {interp:<25}");
    }
    println!();
    println!(
        "Largest |tape - (P(target) - 1)| in this table: {}",
        sci(confidence_diff, 2)
    );
    println!();

    println!(
        "Gradient tensor shape: [{}, {}]",
        tape_grad.len(),
        tape_grad[0].len()
    );
    println!("  - 4 positions (0 through 3, predicting tokens 1 through 4)");
    println!("  - 6 vocabulary tokens");
    println!(
        "  - Total: {} gradient values",
        tape_grad.iter().map(Vec::len).sum::<usize>()
    );
    println!();

    // ---- The gradient checker agrees ----
    println!("Finite-difference check of the whole loss (tapegrad::check::gradcheck):");
    let flat_logits: Vec<f64> = PROBS.iter().flatten().map(|p| p.ln()).collect();
    let report = gradcheck(
        |g, l| {
            let losses: Vec<Var> = l
                .chunks(6)
                .zip(TARGETS)
                .map(|(row, t)| functional::cross_entropy_composed(row, t))
                .collect();
            g.sum(losses)
        },
        &flat_logits,
        Tolerance::default(),
    );
    println!("{report}");
    println!();

    // ---- Position 0's graph as DOT ----
    let pos0 = &positions[0];
    let mut dot = Dot::new(pos0.loss)
        .gradients(&grads)
        .title("Position 0: L = -ln(exp(l_I) / sum_j exp(l_j)), logits = ln P")
        .label(pos0.probs[TARGETS[0]], "P(I)")
        .label(pos0.loss, "L_0");
    for (j, &l) in pos0.logits.iter().enumerate() {
        dot = dot.label(l, format!("logit[{}]", TOKEN_NAMES[j]));
    }
    let path = dot_path()?;
    std::fs::write(&path, dot.render())?;
    println!(
        "Wrote position 0's loss graph (exp -> sum -> div -> ln -> neg, values and gradients) to {}",
        path.display()
    );
    println!(
        "Render it with Graphviz:  dot -Tsvg {} -o position0_loss.svg",
        path.display()
    );
    println!("(a rendered copy is in docs/position0_loss.svg)");

    if !ok || !report.passed() {
        return Err("the tape's gradient does not match the closed form".into());
    }
    Ok(())
}
