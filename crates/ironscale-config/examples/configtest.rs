//! `cargo run -p ironscale-config --example configtest -- config.yaml`: print every
//! diagnostic for a config file (with env overrides), exit 1 on errors.

use std::path::PathBuf;

fn main() {
    let path = std::env::args_os().nth(1).map(PathBuf::from);
    match ironscale_config::Config::from_env_and_file(path.as_deref()) {
        Ok((_, diags)) => {
            print!("{}", ironscale_config::render(&diags));
            println!("configuration OK");
        }
        Err(diags) => {
            print!("{}", ironscale_config::render(&diags));
            std::process::exit(1);
        }
    }
}
