//! Check a policy file: `cargo run -p ironscale-policy --example check -- FILE`
fn main() {
    for f in std::env::args().skip(1) {
        let text = std::fs::read_to_string(&f).expect("read");
        match ironscale_policy::Policy::parse(&text, &f) {
            Ok(p) => {
                println!("{f}: ok");
                for w in p.warnings() {
                    println!("  {w}");
                }
            }
            Err(e) => println!("{e}"),
        }
    }
}
