//! The inputs every crate's `fuzz_corpus` test draws (included by path, since proptest is
//! only a dev-dependency and stays out of the pure core).

use proptest::prelude::any;
use proptest::prop_oneof;
use proptest::strategy::Strategy;
use swell_core::fuzz_targets::{corpus, mutate};

/// Random bytes, or a corpus file of `target` after a few edits.
pub fn inputs(target: &str) -> impl Strategy<Value = Vec<u8>> + use<> {
    let seeds = corpus(target);
    let n = seeds.len();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..128),
        (
            0..n,
            proptest::collection::vec(any::<(usize, u8, u8)>(), 0..8)
        )
            .prop_map(move |(i, edits)| mutate(&seeds[i].1, &edits)),
    ]
}

/// One test per fuzz target: every checked-in corpus file of `target` replays (at least
/// `min` of them), then `cases` random and mutated inputs hold.
///
/// ```ignore
/// fuzz_corpus_tests! { cases: 2000;
///     traces_hold: "trace" => targets::trace, at_least 9;
/// }
/// ```
macro_rules! fuzz_corpus_tests {
    (cases: $cases:expr; $($test:ident: $target:literal => $body:path, at_least $min:literal;)*) => {
        $(
            #[test]
            fn $test() {
                assert!(swell_core::fuzz_targets::replay($target, $body) >= $min);
                let config = proptest::test_runner::Config {
                    cases: $cases,
                    failure_persistence: None,
                    ..proptest::test_runner::Config::default()
                };
                proptest::test_runner::TestRunner::new(config)
                    .run(&crate::fuzz_inputs::inputs($target), |data| {
                        $body(&data);
                        Ok(())
                    })
                    .unwrap();
            }
        )*
    };
}
