//! Replaying a failing seed: set the seed (and the configuration it failed with) and run
//!
//! ```text
//! RAFTOR_SIM_SEED=1234 RAFTOR_SIM_NODES=5 cargo test -p raftor-sim --test replay -- --ignored --nocapture
//! ```
//!
//! Every event of the run is printed, one line each, then the outcome. `RAFTOR_SIM_STEPS` changes
//! the length of the faulty phase; for other settings, call `raftor_sim::replay` from a test with
//! the configuration of the failing test.

use raftor_sim::{replay, SimConfig};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

#[test]
#[ignore = "prints a full trace; run by hand with RAFTOR_SIM_SEED"]
fn replay_a_seed() {
    let mut config = SimConfig::default_for(env("RAFTOR_SIM_NODES", 3));
    config.steps = env("RAFTOR_SIM_STEPS", config.steps);
    let seed = env("RAFTOR_SIM_SEED", 0);
    if let Err(failure) = replay(seed, &config) {
        panic!("{failure}");
    }
}
