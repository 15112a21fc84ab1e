//! The `ism-sim` command line.

fn main() {
    println!("ism-sim: board under construction");
}
