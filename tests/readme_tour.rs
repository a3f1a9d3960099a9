//! `cargo run --example tour` runs the README's tour: the body of `examples/tour.rs`'s
//! `main` is the README's first Rust block, line for line (the README block itself runs as
//! a doctest, see `src/lib.rs`).

const README: &str = include_str!("../README.md");
const TOUR: &str = include_str!("../examples/tour.rs");

/// The lines of the first ```rust block after the "## A short tour" heading.
fn readme_tour() -> Vec<&'static str> {
    let section = README
        .split_once("## A short tour\n")
        .expect("README has a \"## A short tour\" section")
        .1;
    let block = section
        .split_once("```rust\n")
        .expect("the tour section has a ```rust block")
        .1;
    let block = block.split_once("```\n").expect("the block is closed").0;
    block.lines().collect()
}

/// The lines of `main`'s body in examples/tour.rs, without its 4-space indent.
fn example_main() -> Vec<&'static str> {
    let body = TOUR
        .split_once("fn main() {\n")
        .expect("examples/tour.rs has `fn main() {`")
        .1;
    let body = body
        .strip_suffix("}\n")
        .expect("examples/tour.rs ends with main's closing brace");
    body.lines()
        .map(|line| line.strip_prefix("    ").unwrap_or(line))
        .collect()
}

#[test]
fn the_tour_example_is_the_readme_tour() {
    let (readme, example) = (readme_tour(), example_main());
    assert!(readme.len() > 20, "the README's tour block looks truncated");
    for (i, (r, e)) in readme.iter().zip(&example).enumerate() {
        assert_eq!(
            r,
            e,
            "line {} of the README's tour differs from examples/tour.rs",
            i + 1
        );
    }
    assert_eq!(
        readme.len(),
        example.len(),
        "the README's tour and examples/tour.rs's main differ in length"
    );
}
