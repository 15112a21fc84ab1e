//! The README's stack example ("Using the stack") is `examples/hello_smc.rs`: its code
//! block appears there line for line, and that example runs and passes here.

#[path = "../examples/hello_smc.rs"]
mod hello_smc;

/// A line with its runs of white space made one space (rustfmt aligns comments
/// differently from the README), or `None` if blank.
fn norm(l: &str) -> Option<String> {
    let l = l.split_whitespace().collect::<Vec<_>>().join(" ");
    (!l.is_empty()).then_some(l)
}

/// The lines of the first ```rust block after `heading` in `text`, normalised by [`norm`],
/// blank lines dropped.
fn rust_block(text: &str, heading: &str) -> Vec<String> {
    let after = &text[text.find(heading).expect("heading in the README")..];
    let start = after.find("```rust\n").expect("a rust block") + "```rust\n".len();
    let body = &after[start..];
    let end = body.find("```").expect("the block's end");
    body[..end].lines().filter_map(norm).collect()
}

#[test]
fn the_readme_stack_example_is_the_example_file() {
    let readme = include_str!("../../README.md");
    let example = include_str!("../examples/hello_smc.rs");
    let block = rust_block(readme, "## Using the stack");
    assert!(block.len() > 5, "{block:?}");
    let lines: Vec<String> = example.lines().filter_map(norm).collect();
    // Imports may be ordered and grouped differently; the code must be the same sequence.
    let (uses, code): (Vec<&String>, Vec<&String>) =
        block.iter().partition(|l| l.starts_with("use "));
    for u in uses {
        assert!(lines.contains(u), "README import {u:?} not in hello_smc.rs");
    }
    let code: Vec<String> = code.into_iter().cloned().collect();
    assert!(
        lines.windows(code.len()).any(|w| w == code.as_slice()),
        "the README's code block differs from examples/hello_smc.rs:\n{}",
        code.join("\n")
    );
}

#[test]
fn the_readme_stack_example_runs() {
    hello_smc::main().expect("the README example");
}
