//! `chorus-fuzz <target>`: one AFL++ harness for every target in
//! `chorus::fuzzing` (persistent mode: many inputs per fork).

fn main() {
    let target = std::env::args().nth(1).unwrap_or_default();
    if !chorus::fuzzing::TARGETS.contains(&target.as_str()) {
        eprintln!("usage: chorus-fuzz <target>; targets: {:?}", chorus::fuzzing::TARGETS);
        std::process::exit(2);
    }
    afl::fuzz!(|data: &[u8]| {
        chorus::fuzzing::run(&target, data);
    });
}
